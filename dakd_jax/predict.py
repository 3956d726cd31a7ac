"""`python -m dakd_jax.predict`: segments images, folders or videos with a trained network.

The implementation and its documentation live in `dakd_jax/tools/predict.py`.
"""

import sys

from dakd_jax.tools.predict import main

if __name__ == '__main__':
  sys.exit(main())
