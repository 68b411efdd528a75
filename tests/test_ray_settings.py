"""The Ray backend's choice and messages, without Ray or a cluster (runs everywhere)."""

import builtins
import json

import pytest

from lib import ray_backend
from lib.testing import run_cli
from lib.training.config import build_config


def test_address_comes_from_env_then_workspace_setting(workspace, monkeypatch):
    monkeypatch.delenv(ray_backend.ENV_ADDRESS, raising=False)
    assert ray_backend.configured(workspace) is None
    rc, out = run_cli("ray", "set", "10.0.0.5:8265", "--workspace", str(workspace.root), "--json")
    assert rc == 0 and json.loads(out) == {"address": "http://10.0.0.5:8265",
                                           "source": "workspace", "allow_unauthenticated": False}
    monkeypatch.setenv(ray_backend.ENV_ADDRESS, "https://ray.internal:443/")
    s = ray_backend.settings(workspace)
    assert (s.address, s.source) == ("https://ray.internal:443", "env")
    monkeypatch.delenv(ray_backend.ENV_ADDRESS)
    rc, out = run_cli("ray", "clear", "--workspace", str(workspace.root))
    assert "no Ray cluster" in out and ray_backend.configured(workspace) is None


def test_global_ray_options_reach_the_command(workspace, monkeypatch):
    for name in (ray_backend.ENV_ADDRESS, ray_backend.ENV_ALLOW):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    rc, out = run_cli("ray", "show", "--workspace", str(workspace.root), "--ray", "head:8265",
                   "--ray-allow-unauthenticated", "--json")
    assert json.loads(out) == {"address": "http://head:8265", "source": "env",
                               "allow_unauthenticated": True}


def test_a_ray_client_address_is_refused_with_the_right_one_named():
    with pytest.raises(ray_backend.RayBackendError, match=r"dashboard address.*http://HEAD:8265"):
        ray_backend.normalize_address("ray://head:10001")


def test_missing_extra_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ray_backend.RayBackendError) as err:
        ray_backend.import_ray()
    assert "pip install 'reranker-studio[ray]'" in str(err.value)


def test_scoring_goes_to_the_cluster_only_above_the_threshold(workspace, monkeypatch):
    monkeypatch.setenv(ray_backend.ENV_ADDRESS, "http://head:8265")
    monkeypatch.delenv(ray_backend.ENV_SCORING_MIN, raising=False)
    assert ray_backend.scoring_settings(workspace, 49_999) is None
    assert ray_backend.scoring_settings(workspace, 50_000).address == "http://head:8265"
    assert ray_backend.scoring_settings(None, 10**6) is None  # no workspace: no cache, local
    monkeypatch.setenv(ray_backend.ENV_SCORING_MIN, "10")
    assert ray_backend.scoring_settings(workspace, 10) is not None


def test_job_resources_per_run():
    cpu = build_config({"device": "cpu"})
    auto = build_config({})
    assert ray_backend.job_gpus(cpu, {"GPU": 8}) == 0
    assert ray_backend.job_gpus(auto, {"GPU": 8}) == 1 and ray_backend.job_gpus(auto, {}) == 0
    assert ray_backend.job_gpus(build_config({"device": "cuda", "num_gpus": 4}), {}) == 4
    # under Ray Train the workers ask for the GPUs, not the coordinating entrypoint
    assert ray_backend.job_gpus(build_config({"ray_train_workers": 4}), {"GPU": 8}) == 0


def test_ray_train_workers_must_fit_the_cluster():
    """More workers than the cluster has CPUs (or GPUs, when it trains on them) is refused
    before submitting: Ray Train would wait for them forever."""
    two = build_config({"ray_train_workers": 2, "device": "cpu"})
    assert ray_backend.ray_train_shortfall(two, {"CPU": 2.0}) is None
    why = ray_backend.ray_train_shortfall(two, {"CPU": 1.0, "GPU": 4.0})
    assert why.startswith("ray_train_workers: 2 needs 2 CPUs (it has 1)") and "queued" in why
    on_gpus = build_config({"ray_train_workers": 4})  # device auto: GPUs when the cluster has
    assert ray_backend.ray_train_shortfall(on_gpus, {"CPU": 64.0, "GPU": 4.0}) is None
    assert "4 GPUs (it has 2)" in ray_backend.ray_train_shortfall(on_gpus, {"CPU": 64, "GPU": 2})
    assert ray_backend.ray_train_shortfall(build_config({}), {}) is None  # no Ray Train


def test_job_env_carries_the_worker_settings_not_the_app_environment(workspace, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-ship")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = ray_backend.job_env(workspace, gpu_ids_hidden=False)
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["HF_HUB_OFFLINE"] == "1"
    assert env["RERANKER_STUDIO_HOME"] == str(workspace.root)
    assert "CUDA_VISIBLE_DEVICES" not in env  # Ray sets it to the job's GPUs
    assert ray_backend.job_env(workspace, gpu_ids_hidden=True)["CUDA_VISIBLE_DEVICES"] == ""


def test_ray_train_workers_need_a_cluster(workspace, monkeypatch):
    from lib.bootstrap import load_demo
    from lib.training import jobs
    from lib.training.config import ConfigError

    monkeypatch.delenv(ray_backend.ENV_ADDRESS, raising=False)
    load_demo(workspace)
    with pytest.raises(ConfigError, match="ray_train_workers: 2 needs a Ray cluster"):
        jobs.create_run(workspace, "cranfield-demo", build_config({"ray_train_workers": 2}))
    assert jobs.list_runs(workspace).empty
