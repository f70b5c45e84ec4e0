"""Each family owns its geometry: ``set_geometry`` then ``geometry`` gives back what was set, for
every family, method, resize and factor, in any order of phase changes."""

import random

import pytest
import torch

from coarse2fine.compression import METHODS, PATCH_RESIZES, Compression
from coarse2fine.config import load_config

FAMILIES = {
    "ast": ["model.preset=micro"],
    "ssast": ["model.arch=ssast", "model.preset=micro"],
    "htsat": ["model.arch=htsat", "model.preset=micro"],
}


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_set_geometry_then_geometry_round_trips(arch):
    cfg = load_config("demo", [*FAMILIES[arch], "c2f.schedule=4-2-1"])
    torch.manual_seed(0)
    model = cfg.phase(0, 3).build_model()
    geometries = [Compression(m, R, resize).input_geometry(128, 128)
                  for m in METHODS for resize in PATCH_RESIZES for R in (1, 2, 4)]
    rng = random.Random(0)
    for geo in [*geometries, *rng.sample(geometries, len(geometries))]:  # every geometry, then a shuffled tour
        model.set_geometry(geo)
        assert model.geometry == geo, (arch, geo)
        x = torch.randn(1, geo.frames, geo.mel_bins)
        assert model.eval()(x).shape == (1, 3)


def test_a_model_built_at_a_coarse_phase_knows_its_time_factor():
    # Built directly at R = 4 (as a resumed run's model is), the model's config says R = 4:
    # patchout scales its dropped columns by it.
    cfg = load_config("demo", ["model.preset=micro", "model.overrides.pos_embed=disentangled",
                               "model.overrides.patchout_time=4"])
    coarse = cfg.phase(0, 3).build_model()
    assert coarse.geometry.time_factor == 4 and coarse.config.patchout_counts == (0, 1)
