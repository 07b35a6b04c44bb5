"""`python -m alarm.tiny [--out DIR] [NAME ...]`: build the tiny checkpoints (see `alarm.tiny`)."""

from alarm.tiny import main

if __name__ == "__main__":
    main()
