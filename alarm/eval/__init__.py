"""Multiple-choice evaluation (MMAU, MMAR, MMSU, AIR-Bench Foundation): loaders, prompts, parsing, the
official and strict scorers, reports and the run loop over an `Answerer`. Pure library: the answerers that run
the serving stack live in services/serve/answerers.py; `python -m alarm.eval` is the command."""
