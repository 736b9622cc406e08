"""Refactors must not move results: the archived records' configs still load as they are, and
the checkpoint-cache keys (run folders and DiSPo's shared pretraining folders) computed for
them are the ones they were trained under: protocol 0's, and protocol 1's, which protocol 2
keeps (it changed only execution, whose settings never enter a key). Protocol 1 keys add the
protocol: a run cut into windows by other rules is another run."""

import json
from pathlib import Path

import pytest

import policies
from cfbench.app.spec import pretraining_dir, run_dir
from cfbench.datasets import load_demos
from cfbench.demos import ExpertRunner, dataset_id, manifest_entry, write_dataset
from cfbench.envs import ENV_IDS
from cfbench.protocol import N_DEMOS

ARCHIVES = Path(__file__).resolve().parent.parent / "results" / "archive"
#: config fields that ``fit`` fills in from the dataset: unset when a run's key is computed
FITTED = ("obs_dim", "action_dim", "views", "state_layout", "reference_hz")
RECORDS = [json.loads(path.read_text()) for path in sorted(ARCHIVES.glob("protocol[01]/*.json"))]  # read as is
TRAINED = [r for r in RECORDS if "training" in r]
#: the keys hash the demos, which only a registered env can make (ClampPassing-v0 is retired)
KEYED = [r for r in TRAINED if r["env_id"] in ENV_IDS.values()]
#: defaults changed on purpose since protocol 0, with the values the archived default records ran
CHANGED_DEFAULTS = {"dispo": {"prediction_type": "epsilon", "scan_direction": "causal", "discretization": "euler"}}


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demos")
    for env_id in sorted({r["env_id"] for r in KEYED}):
        runner = ExpertRunner(env_id)  # one expert run per seed serves every rate
        for rates in sorted({tuple(r["source_hz"]) for r in KEYED if r["env_id"] == env_id}):
            write_dataset(env_id, rates, N_DEMOS, demos_dir=folder, runner=runner)
        runner.close()
    return folder


def _json(values: dict) -> dict:
    return json.loads(json.dumps(values, default=list))


def _unfitted(record: dict) -> dict:
    """The record's config as a run is keyed: fitted fields unset, retired options (at their
    neutral value) left out."""
    config = policies.policy_class(record["policy"]).config_class.without_retired(record["provenance"]["config"])
    defaults = _json(policies.make(record["policy"]).config.to_dict())
    return {**config, **{key: defaults[key] for key in FITTED if key in config}}


def _label(record):
    return f"{record['env_id']} {record['policy']}-{record['variant']} {record['source_hz']}"


def test_committed_configs_load_unchanged():
    """Fields added since are filled in at their neutral value (config.NEUTRAL), and retired ones,
    at theirs (config.RETIRED), are left out: what a record lists is otherwise the config as
    recorded, and nothing else differs from what it ran."""
    assert len(TRAINED) >= 60 + 150
    for record in TRAINED:
        config_class = policies.policy_class(record["policy"]).config_class
        config = config_class.without_retired(record["provenance"]["config"])
        loaded = config_class.from_saved(record["provenance"]["config"])
        values, neutral = _json(loaded.to_dict()), _json(loaded.neutral())
        assert {k: values[k] for k in config} == config, _label(record)
        assert all(values[k] == neutral[k] for k in values.keys() - config.keys()), _label(record)


def test_default_configs_are_those_of_the_default_records():
    for record in TRAINED:
        if record["variant"] == "":
            changed = CHANGED_DEFAULTS.get(record["policy"], {}) if _protocol(record) == 0 else {}
            seed = {"seed": record["train_seed"]} if record.get("train_seed") else {}
            then = _json(policies.make(record["policy"], **changed, **seed).config.to_dict())
            recorded = _unfitted(record)
            assert recorded == {k: then[k] for k in recorded}, _label(record)


def _protocol(record: dict) -> int:
    return record.get("protocol", 0)  # schema 1 (protocol 0) had no such entry


def test_cache_keys_of_committed_records_are_unchanged(demos_dir):
    assert len(KEYED) >= 40 + 150
    datasets = {}  # read once per (env, rates): reading is most of this test's time
    for record in KEYED:
        config = _unfitted(record)
        neutral = policies.policy_class(record["policy"]).config_class.neutral()  # what the record ran
        policy = policies.make(record["policy"], **{**neutral, **{k: v for k, v in config.items() if k != "policy"}})
        rates = tuple(record["source_hz"])
        files = manifest_entry(demos_dir, dataset_id(record["env_id"], rates))["files"]
        work = run_dir(Path("checkpoints"), policy, record["env_id"], rates, files, protocol=_protocol(record))
        assert str(work) == record["training"]["run_dir"], _label(record)
        identity = policy.pretraining_identity()
        if identity is not None:
            key = (record["env_id"], rates)
            datasets[key] = datasets.get(key) or load_demos(*key, demos_dir=demos_dir, generate=False)
            dataset = datasets[key]
            assert str(pretraining_dir(work, identity, dataset, protocol=_protocol(record))) == \
                record["training"]["phases"][0]["dir"], \
                _label(record)


def test_a_field_away_from_its_neutral_value_names_another_run():
    base = policies.make("dispo", scan_direction="causal", discretization="euler")  # both at their neutral value
    for field, other in (("scan_direction", "bidirectional"), ("discretization", "zoh")):
        assert field in base.config.NEUTRAL and field not in base.config.identity()
        changed = policies.make("dispo", **{field: other})
        assert changed.config.identity()[field] == other
        assert run_dir(Path("c"), changed, "cfbench/PassagePassing-v0", (2.5,), {}) != run_dir(
            Path("c"), base, "cfbench/PassagePassing-v0", (2.5,), {})
