"""Audio in: decode (`decode`), cached polyphase resampling (`resample`), the shared fbank math and the front-end
entry points (`features`; each encoder family's own front-end lives in its `alarm.encoders` module)."""
