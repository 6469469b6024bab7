#!/usr/bin/env bash
# Wheels a lent GPU machine lacks (it has torch, transformers, numpy, pillow, matplotlib, ... but not
# diffusers, papermill, a Jupyter kernel or Dask; its filelock, torch's, may predate the leases the batch claims runs with),
# at this venv's versions, for its Python 3.12, into .whl/.
set -euo pipefail
PY=${PY:-.venv/bin/python}
NAMES="diffusers papermill entrypoints tenacity nbclient nbformat fastjsonschema jsonschema jsonschema_specifications
referencing rpds_py jupyter_client jupyter_core ipykernel comm debugpy ipython ipython_pygments_lexers jedi parso
matplotlib_inline pexpect ptyprocess prompt_toolkit wcwidth stack_data asttokens executing pure_eval nest_asyncio2
pyzmq tornado traitlets importlib_metadata zipp platformdirs
dask distributed filelock cloudpickle toolz partd locket msgpack sortedcontainers tblib zict click"
grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
pins=$($PY -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $NAMES)
rm -rf .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $pins
du -sh .whl
