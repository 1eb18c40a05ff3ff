"""vjepa-jax: V-JEPA 2 and V-JEPA 2-AC in JAX/Flax."""
import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (HERE / "requirements.txt").read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setuptools.setup(
    name="vjepa-jax",
    version="0.1.0",
    description="V-JEPA 2 / V-JEPA 2-AC in JAX/Flax: fine-tune on DROID RLDS and plan robot actions",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vjepa_jax", "vjepa_jax.*", "weights_conversion",
                                               "weights_conversion.*"]),
    install_requires=_requirements(),
    extras_require={
        # Reading official .pt files; the CPU build is enough.
        "convert": ["torch==2.13.0"],
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "torch==2.13.0"],
        "gpu": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        "wandb": ["wandb==0.31.0"],
        # Closed-loop evaluation on a simulated Franka (vjepa_jax.sim); CPU rendering, no GL.
        "sim": ["panda-gym==3.0.7", "pybullet==3.2.7", "gymnasium==1.4.0"],
    },
)
