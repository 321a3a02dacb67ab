"""Adapters of jaxrrm to other libraries' interfaces (each an optional dependency).

* :mod:`jaxrrm.integrations.jaxmarl`: :class:`~jaxrrm.integrations.jaxmarl.RRMJaxMARLEnv`, the
  game as a JaxMARL ``MultiAgentEnv``, and a short IPPO in JaxMARL's style. Needs JaxMARL
  (``pip install 'jaxrrm[jaxmarl]'``); importing the module without it raises ``ImportError``
  with that line.
* :mod:`jaxrrm.integrations.ogmarl`: jaxrrm datasets as OG-MARL (flashbax) vaults and back
  (``pip install 'jaxrrm[ogmarl]'``).
* :mod:`jaxrrm.integrations.marl_eval`: results of :mod:`jaxrrm.compare` in InstaDeep
  marl-eval's JSON layout (no extra dependency).

This package imports none of them: ``import jaxrrm`` never needs an optional library.
"""
