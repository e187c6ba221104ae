"""``python -m bench [--plan quick|full|smoke] [--servers a,b] [--runs N]``."""

from bench.run import main

if __name__ == "__main__":
    main()
