"""Fault-injection tests of the checkpoints (jaxrrm.checkpoint) and of resuming (jaxrrm.train):
flipped bytes and swapped arrays fail the SHA-256 checks; damaged steps (empty, truncated,
deleted or garbled items) are CheckpointErrors naming the directory, the step and the item;
restore falls back to the newest step that verifies (never over a configuration mismatch) and
save copes with damaged step directories; resuming compares the environment parameters and
does not believe the stored chunk count over the step; checkpoints of the older format are
refused."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The tiny set-up of tests/test_train.py (batch 32, chunk 10: shares its compiled chunk).
from _train_setup import CFG, CKPT_TC, LC, assert_trees_bitwise_equal, kill_at

from jaxrrm import checkpoint as ckpt
from jaxrrm import data, train

# A failed tensorstore read can leave an orbax future behind whose callback finds its event loop
# closed ("Event loop is closed", reported at garbage collection): noise of the read errors
# these tests provoke on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TC = CKPT_TC

CORRUPT = ckpt.CorruptCheckpointError
WARNING = ckpt.CheckpointWarning

#: A small state of two leaves: index 000000 is ``['b']``, 000001 ``['w']`` (sorted keys).
STATE = {"w": jnp.arange(2000, dtype=jnp.float32).reshape(20, 100),
         "b": jnp.arange(5, dtype=jnp.int32)}
LIKE = jax.tree.map(jnp.zeros_like, STATE)
META = {"a": 1}


# ------------------------------------------------------------------------------------------------
# Helpers: where orbax put the bytes, and how to damage them
# ------------------------------------------------------------------------------------------------

def _data_files(d, step):
    """The ocdbt data files of a step's state item (``.../state/**/d/<hash>``)."""
    out = []
    for root, _, files in os.walk(os.path.join(d, str(step), "state")):
        if os.path.basename(root) == "d":
            out.extend(os.path.join(root, f) for f in files)
    assert out, "no ocdbt data files found"
    return sorted(out, key=os.path.getsize, reverse=True)


def _json_file(d, step, item):
    """The JSON file of a JsonSave item (orbax names it ``metadata``)."""
    path = os.path.join(d, str(step), item, "metadata")
    assert os.path.isfile(path)
    return path


def _flip_byte(path, pos=None):
    with open(path, "r+b") as fh:
        b = bytearray(fh.read())
        i = len(b) // 2 if pos is None else pos
        b[i] ^= 0xFF
        fh.seek(0)
        fh.write(b)


def _rewrite_json(path, fn):
    with open(path) as fh:
        obj = json.load(fh)
    obj = fn(obj)
    with open(path, "w") as fh:
        json.dump(obj, fh)


# ------------------------------------------------------------------------------------------------
# 1. Checksums
# ------------------------------------------------------------------------------------------------

def test_swapped_state_data_fails_checksum(tmp_path):
    # Readable data that is not what was saved: another checkpoint's state item.
    a, b = tmp_path / "a", tmp_path / "b"
    ckpt.save(a, 1, STATE, META)
    ckpt.save(b, 1, {**STATE, "b": STATE["b"] + 1}, META)
    shutil.rmtree(a / "1" / "state")
    shutil.copytree(b / "1" / "state", a / "1" / "state")
    for step in (None, 1):
        with pytest.raises(CORRUPT,
                           match=r"step 1\).*state array 000000 \(leaf \['b'\]\).*SHA-256"):
            ckpt.restore(a, LIKE, META, step=step)


@pytest.mark.parametrize("where,pattern", [
    # the middle of the largest data file (the arrays' compressed chunks): decodes to other data
    ("array_data", r"step 1\).*state array 00000\d \(leaf .*SHA-256"),
    # the top-level b-tree node (state/d/<hash>): tensorstore's CRC fails, a read error
    ("btree_node", r"step 1\).*item 'state' .* is unreadable"),
])
def test_flipped_byte_in_state_data_file_detected(tmp_path, where, pattern):
    ckpt.save(tmp_path, 1, STATE, META)
    if where == "array_data":
        path = _data_files(tmp_path, 1)[0]
    else:
        (path,) = [str(p) for p in (tmp_path / "1" / "state" / "d").iterdir()]
    _flip_byte(path)
    with pytest.raises(CORRUPT, match=pattern) as info:
        ckpt.restore(tmp_path, LIKE, META)
    assert str(tmp_path) in str(info.value)


def test_tampered_meta_or_integrity_fails_checksum(tmp_path):
    ckpt.save(tmp_path, 1, STATE, META)
    ckpt.save(tmp_path, 2, STATE, META)
    _rewrite_json(_json_file(tmp_path, 1, "meta"), lambda m: {**m, "a": 2})
    for expected in (None, META, {"a": 2}):
        with pytest.raises(CORRUPT, match=r"step 1\).*'meta'.*SHA-256"):
            ckpt.restore(tmp_path, LIKE, expected, step=1)
    with pytest.raises(CORRUPT, match=r"step 1\).*'meta'.*SHA-256"):
        ckpt.restore_meta(tmp_path, step=1)

    def bump(integrity):
        integrity["arrays"]["000001"] = "0" * 64
        return integrity

    _rewrite_json(_json_file(tmp_path, 2, "integrity"), bump)
    with pytest.raises(CORRUPT,
                       match=r"step 2\).*000001 \(leaf \['w'\]\).*SHA-256"):
        ckpt.restore(tmp_path, LIKE, META, step=2)


# ------------------------------------------------------------------------------------------------
# 2. The environment parameters are part of the compared configuration
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,pattern", [
    ("tx_power_dbm", 20.0, r"env_params\.tx_power_dbm: stored 30\.0, expected 20\.0"),
    ("pf_lambda", 0.5, r"env_params\.pf_lambda: stored 0\.8\d*, expected 0\.5"),
])
def test_resume_with_other_env_params_refused(params, dataset, killed_dir, field, value,
                                              pattern):
    stored, _ = ckpt.restore_meta(killed_dir)
    assert stored["env_params"] == data.params_to_json(params)
    other = train.make_train(CFG, params.replace(**{field: value}), LC, TC)
    with pytest.raises(ckpt.CheckpointError, match=pattern) as info:
        other.train(jax.random.key(5), dataset, checkpoint_dir=killed_dir)
    msg = str(info.value)
    assert "learner_config" not in msg and "dataset_fingerprint" not in msg
    assert ckpt.all_steps(killed_dir) == [10]  # nothing was written


def test_make_meta_env_params(params):
    p = params
    meta = ckpt.make_meta(CFG, LC, TC, "f" * 64, env_params=p)
    assert meta["env_params"] == data.params_to_json(p)
    assert "env_params" not in ckpt.make_meta(CFG, LC, TC, "f" * 64)
    other = ckpt.make_meta(CFG, LC, TC, "f" * 64, env_params=p.replace(tx_power_dbm=20.0))
    with pytest.raises(ckpt.CheckpointError, match=r"env_params\.tx_power_dbm"):
        ckpt.check_meta(meta, other)


# ------------------------------------------------------------------------------------------------
# 3. Damaged steps are CheckpointErrors naming the directory, the step and the item
# ------------------------------------------------------------------------------------------------

def _empty_step(d):
    shutil.rmtree(d / "1")
    os.makedirs(d / "1")


def _truncate_state(d):
    for f in _data_files(d, 1):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _drop_state_structure(d):
    # a meta without "state_structure" whose checksum was recomputed: only the keys are missing
    meta_path = _json_file(d, 1, "meta")
    _rewrite_json(meta_path, lambda m: {k: v for k, v in m.items() if k != "state_structure"})
    with open(meta_path) as fh:
        sha = ckpt.meta_sha256(json.load(fh))
    _rewrite_json(_json_file(d, 1, "integrity"), lambda i: {**i, "meta_sha256": sha})


DAMAGE = {
    "empty_step_dir": (_empty_step, "'meta'"),
    "meta_deleted": (lambda d: shutil.rmtree(d / "1" / "meta"), "'meta'"),
    "meta_garbage_json": (lambda d: _write(_json_file(d, 1, "meta"), "{not json"), "'meta'"),
    "meta_not_object": (lambda d: _write(_json_file(d, 1, "meta"), "[1, 2]"), "'meta'"),
    "meta_truncated": (lambda d: _write(_json_file(d, 1, "meta"), ""), "'meta'"),
    "meta_missing_state_structure": (_drop_state_structure, "'state_structure'"),
    "integrity_deleted": (lambda d: shutil.rmtree(d / "1" / "integrity"), "'integrity'"),
    "integrity_garbage_json": (lambda d: _write(_json_file(d, 1, "integrity"), "{{"),
                               "'integrity'"),
    "state_deleted": (lambda d: shutil.rmtree(d / "1" / "state"), "'state'"),
    "state_data_truncated": (_truncate_state, "'state'"),
    "state_data_deleted": (lambda d: [os.remove(f) for f in _data_files(d, 1)], "'state'"),
    "state_manifest_deleted": (lambda d: os.remove(d / "1" / "state" / "manifest.ocdbt"),
                               "'state'"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_step_is_a_checkpoint_error(tmp_path, kind):
    damage, item = DAMAGE[kind]
    ckpt.save(tmp_path, 1, STATE, META)
    damage(tmp_path)
    for step in (None, 1):
        with pytest.raises(CORRUPT) as info:
            ckpt.restore(tmp_path, LIKE, META, step=step)
        msg = str(info.value)
        assert str(tmp_path) in msg and "(step 1)" in msg and item in msg, msg
    if item in ("'meta'", "'integrity'", "'state_structure'"):
        with pytest.raises(CORRUPT, match=r"\(step 1\)"):
            ckpt.restore_meta(tmp_path)


# ------------------------------------------------------------------------------------------------
# 4. Falling back to the newest step that verifies; saving next to damaged steps
# ------------------------------------------------------------------------------------------------

def test_restore_falls_back_over_damaged_steps(tmp_path):
    ckpt.save(tmp_path, 1, STATE, META)
    ckpt.save(tmp_path, 2, {**STATE, "b": STATE["b"] * 2}, META)
    ckpt.save(tmp_path, 3, STATE, META)
    os.makedirs(tmp_path / "9999")        # an empty step directory
    _flip_byte(_data_files(tmp_path, 3)[0])  # a damaged newest real step
    assert ckpt.latest_step(tmp_path) == 9999
    with pytest.warns(WARNING, match=r"skipped .*\[9999, 3\].*restored step 2"):
        restored, step, meta = ckpt.restore(tmp_path, LIKE, META)
    assert step == 2 and meta["a"] == 1
    np.testing.assert_array_equal(np.asarray(restored["b"]), [0, 2, 4, 6, 8])
    with pytest.warns(WARNING, match="9999"):
        assert ckpt.restore_meta(tmp_path)[1] == 3  # its meta verifies
    # an explicit step does not fall back
    with pytest.raises(CORRUPT, match=r"step 9999\).*'meta'"):
        ckpt.restore(tmp_path, LIKE, META, step=9999)
    with pytest.raises(CORRUPT, match=r"step 3\).*state"):
        ckpt.restore(tmp_path, LIKE, META, step=3)


def test_configuration_mismatch_is_not_skipped(tmp_path):
    ckpt.save(tmp_path, 1, STATE, META)
    ckpt.save(tmp_path, 2, STATE, {"a": 2})
    os.makedirs(tmp_path / "9999")
    with (pytest.raises(ckpt.CheckpointError, match=r"step 2\).*differing fields:\s+a: stored 2"),
          pytest.warns(WARNING)):
        ckpt.restore(tmp_path, LIKE, META)
    other_like = {"w": jnp.zeros((20, 100)), "b": jnp.zeros(6, jnp.int32)}
    with (pytest.raises(ckpt.CheckpointError, match=r"step 2\).*structure"),
          pytest.warns(WARNING, match=r"\[9999\], refused step 2")):
        ckpt.restore(tmp_path, other_like)


def test_no_step_verifies_lists_every_step(tmp_path):
    ckpt.save(tmp_path, 1, STATE, META)
    ckpt.save(tmp_path, 2, STATE, META)
    os.makedirs(tmp_path / "7")
    _write(_json_file(tmp_path, 1, "meta"), "{")
    _flip_byte(_data_files(tmp_path, 2)[0])
    with pytest.raises(CORRUPT, match="no checkpoint step verifies") as info:
        ckpt.restore(tmp_path, LIKE, META)
    msg = str(info.value)
    for s in (7, 2, 1):
        assert f"(step {s})" in msg


def test_save_next_to_damaged_step_dirs(tmp_path):
    ckpt.save(tmp_path, 1, STATE, META, keep=2)
    os.makedirs(tmp_path / "9999")
    os.makedirs(tmp_path / "5")
    with pytest.warns(WARNING, match=r"step 5 .*moved it aside"):
        ckpt.save(tmp_path, 5, STATE, META, keep=2)   # the empty step 5 is moved aside
    assert os.path.isdir(tmp_path / "5.damaged")
    for s in (6, 7):
        ckpt.save(tmp_path, s, STATE, META, keep=2)
    assert ckpt.all_steps(tmp_path) == [6, 7, 9999]  # keep counts complete steps only
    with pytest.raises(ckpt.CheckpointError, match="already"):
        ckpt.save(tmp_path, 7, STATE, META)          # a step that verifies is never replaced
    with pytest.warns(WARNING, match="9999"):
        restored, step, _ = ckpt.restore(tmp_path, LIKE, META)
    assert step == 7
    assert_trees_bitwise_equal(restored, STATE)


def test_resume_skips_damaged_steps_bitwise_equal(trainer, dataset, reference, tmp_path):
    d = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(jax.random.key(5), dataset, callback=kill_at(1), checkpoint_dir=d)
    assert ckpt.all_steps(d) == [10, 20]
    os.makedirs(d / "9999")
    _flip_byte(_data_files(d, 20)[0])
    reports = []
    with pytest.warns(WARNING) as rec:
        res = trainer.train(jax.random.key(5), dataset, callback=lambda c, m: reports.append(c),
                            checkpoint_dir=d)
    msgs = [str(w.message) for w in rec]
    assert any("[9999, 20], restored step 10" in m for m in msgs), msgs
    assert any("step 20 already had" in m and "moved it aside" in m for m in msgs), msgs
    assert reports == [1, 2, 3]  # resumed from step 10
    assert_trees_bitwise_equal(res.state, reference.state)
    assert_trees_bitwise_equal(res.history, reference.history)
    assert_trees_bitwise_equal(res.final, reference.final)
    assert ckpt.all_steps(d) == [20, 30, 40, 9999]
    assert os.path.isdir(d / "20.damaged")
    with pytest.warns(WARNING, match="9999"):
        assert ckpt.restore_meta(d)[1] == 40


# ------------------------------------------------------------------------------------------------
# 5. The stored history must agree with the step
# ------------------------------------------------------------------------------------------------

def _two_chunks(h):
    """A history of 2 chunks (step 20) made from one of 1 chunk, with an evaluation."""
    h = {**h, "chunks": 2, "updates": [10, 20], "eval_updates": [20],
         "metrics": {k: v * 2 for k, v in h["metrics"].items()},
         "eval": {"score": [[0.0, 0.0]]},
         "dtypes": {**h["dtypes"], "eval": {"score": "float64"}}}
    return h


HISTORY_FAULTS = {
    "chunks_over_step": (10, lambda h: {**h, "chunks": 3}, r"chunk count 3"),
    "chunks_zero": (10, lambda h: {**h, "chunks": 0}, r"chunk count 0"),
    "chunks_not_int": (10, lambda h: {**h, "chunks": "1"}, r"chunk count '1'"),
    "updates_too_long": (10, lambda h: {**h, "updates": [10, 20]}, r"updates \[10, 20\]"),
    "metrics_rows": (10, lambda h: {**h, "metrics": {k: v * 2 for k, v in h["metrics"].items()}},
                     r"metrics\["),
    "eval_updates": (10, lambda h: {**h, "eval_updates": [10]}, r"eval_updates \[10\]"),
    "no_dtypes": (10, lambda h: {k: v for k, v in h.items() if k != "dtypes"}, r"'dtypes'"),
    "no_history": (10, None, r"no 'history'"),
    "learner_step": (20, _two_chunks, r"learner's step counters \[10, 10\]"),
}


@pytest.mark.parametrize("kind", sorted(HISTORY_FAULTS))
def test_history_must_agree_with_step(trainer, dataset, killed_dir, tmp_path, kind):
    step, fault, pattern = HISTORY_FAULTS[kind]
    like = trainer.init(jax.random.split(jax.random.key(0), TC.num_seeds))
    state, _, meta = ckpt.restore(killed_dir, like)
    meta = dict(meta)
    if fault is None:
        del meta["history"]
    else:
        meta["history"] = fault(meta["history"])
    ckpt.save(tmp_path, step, state, meta)
    with pytest.raises(ckpt.CheckpointError, match=pattern) as info:
        trainer.train(jax.random.key(5), dataset, checkpoint_dir=tmp_path)
    assert f"(step {step})" in str(info.value)
    assert ckpt.all_steps(tmp_path) == [step]  # nothing was trained or written


# ------------------------------------------------------------------------------------------------
# Schema version 2: older checkpoints are refused with a clear message
# ------------------------------------------------------------------------------------------------

def test_older_or_newer_format_refused(tmp_path):
    assert ckpt.SCHEMA_VERSION == 2
    old, new = tmp_path / "old", tmp_path / "new"
    ckpt.save(old, 1, STATE, {**META, "schema_version": 1})
    ckpt.save(new, 1, STATE, {**META, "schema_version": 3})
    older = r"older checkpoint format.*must start fresh.*another checkpoint_dir"
    for expected in (None, META):
        with pytest.raises(ckpt.CheckpointError, match=older):
            ckpt.restore(old, LIKE, expected)
        with pytest.raises(ckpt.CheckpointError, match=r"newer checkpoint format"):
            ckpt.restore(new, LIKE, expected)
    shutil.rmtree(old / "1" / "integrity")  # the layout of version 1: no integrity item
    with pytest.raises(ckpt.CheckpointError, match=older) as info:
        ckpt.restore(old, LIKE, META)
    assert type(info.value) is ckpt.CheckpointError  # refused, not skipped as damaged


def test_checkpoint_arguments_checked_before_training(trainer, dataset, tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    calls = []
    cb = lambda c, m: calls.append(c)  # noqa: E731
    with pytest.raises(ckpt.CheckpointError, match="not a directory"):
        trainer.train(jax.random.key(5), dataset, callback=cb, checkpoint_dir=a_file / "sub")
    for keep in (0, 1.5):
        with pytest.raises(ValueError, match="checkpoint_keep"):
            trainer.train(jax.random.key(5), dataset, callback=cb,
                          checkpoint_dir=tmp_path / "c", checkpoint_keep=keep)
    assert calls == [] and not (tmp_path / "c").exists()      # nothing trained, nothing made
