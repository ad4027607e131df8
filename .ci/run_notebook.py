"""Execute colab/quickstart.ipynb headless (CPU) from the repository root; fail on any error."""

import sys

import nbformat
from nbclient import NotebookClient

path = sys.argv[1] if len(sys.argv) > 1 else "colab/quickstart.ipynb"
nb = nbformat.read(path, as_version=4)
NotebookClient(
    nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": "colab"}}
).execute()
print(f"{path}: executed {sum(c.cell_type == 'code' for c in nb.cells)} code cells")
