"""Shared fixtures: one thread (oversubscribed threads made steps 200x slower here), tiny models."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def dask_scratch(tmp_path_factory):
    """Dask's worker folders (the batch runs on Dask) under pytest's temporary folder, in this process
    and in the ones the tests start."""
    import dask

    scratch = tmp_path_factory.mktemp("dask")
    with pytest.MonkeyPatch.context() as patch, dask.config.set({"temporary-directory": str(scratch)}):
        patch.setenv("DASK_TEMPORARY_DIRECTORY", str(scratch))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from invrev.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from invrev.testing import write_tiny_exemplars

    return write_tiny_exemplars(tmp_path_factory.mktemp("data") / "inside")


@pytest.fixture()
def tiny_config(tiny_model, tiny_data):
    from invrev.config import TrainConfig

    def make(**overrides):
        params = dict(exemplars=str(tiny_data), model=str(tiny_model), revision="local", resolution=16,
                      steps=4, batch_size=2, grad_accum=1, checkpoint_every=2, hf_sigma=0.8)
        return TrainConfig.from_params({**params, **overrides})

    return make


@pytest.fixture()
def components(tiny_model):
    from invrev.models import load_components

    return load_components(str(tiny_model))
