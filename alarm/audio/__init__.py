"""Audio in: decode (`decode`), cached polyphase resampling (`resample`), per-encoder front-ends (`features`)."""
