"""`python -m dakd_jax.data.synthetic --out DIR`: draws the synthetic datasets (`layouts.main`)."""

from dakd_jax.data.synthetic.layouts import main

if __name__ == '__main__':
  main()
