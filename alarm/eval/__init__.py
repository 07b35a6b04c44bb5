"""Multiple-choice evaluation (MMAU, MMAR, MMSU, AIR-Bench Foundation): loaders, prompts, parsing, the
official and strict scorers, reports and the run loop over an `Answerer`. Pure library: the serving stack is
imported only inside `alarm.eval.answerers` functions; `python -m alarm.eval` is the command."""
