"""The evaluation `Answerer` for any OpenAI-compatible chat server with audio input (ours over HTTP, a baseline
under `vllm serve`, ...): `python -m alarm.eval target=openai://HOST:PORT/v1 [model=ID]`.

    answerer = await OpenAIAnswerer.create("openai://127.0.0.1:8000/v1", model=None, token=None)

The clip goes as an `input_audio` content part (base64 of the file as it is) or, for a URI, an `audio_url` part; the
thinking budget as `thinking_token_budget`, vLLM's name; the reasoning comes back in `reasoning` (vLLM's field; the
older `reasoning_content` is read too). The same prompts, parsing and scorers apply as for the other answerers.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".opus": "ogg"}
FINISH = {"stop": "STOP", "length": "LENGTH", "abort": "ABORTED"}


def base_url(target: str, tls: bool) -> str:
    """openai://host:port/v1 -> http(s)://host:port/v1 (a missing path is /v1)."""
    rest = target.removeprefix("openai://")
    host, _, path = rest.partition("/")
    return f"{'https' if tls else 'http'}://{host}/{path or 'v1'}"


def audio_part(audio: bytes | str | Path) -> dict:
    """A content part for the clip: a URI is passed on (the server reads it), a file or bytes go inline."""
    if isinstance(audio, str) and "://" in audio:
        return {"type": "audio_url", "audio_url": {"url": audio}}
    fmt = "wav" if isinstance(audio, bytes | bytearray) else FORMATS.get(Path(audio).suffix.lower(), "wav")
    data = bytes(audio) if isinstance(audio, bytes | bytearray) else Path(audio).read_bytes()
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def messages(audio, prompt: str, system_prompt: str | None) -> list[dict]:
    content = [{"type": "text", "text": prompt}, *([audio_part(audio)] if audio is not None else [])]
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*system, {"role": "user", "content": content}]


class OpenAIAnswerer:
    """`openai.AsyncOpenAI` against `target`; at most `concurrency` requests in flight."""

    def __init__(self, client, model: str, *, temperature: float | None = None, concurrency: int = 8):
        self.client, self.model, self.temperature = client, model, temperature
        self.slots = asyncio.Semaphore(max(1, concurrency))

    @classmethod
    async def create(cls, target: str, *, model: str | None = None, token: str | None = None, tls: bool = False,
                     ca: str | None = None, temperature: float | None = None, concurrency: int = 8,
                     timeout_s: float = 900.0) -> OpenAIAnswerer:
        import httpx
        import openai

        http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca) if ca else True, timeout=timeout_s)
        client = openai.AsyncOpenAI(base_url=base_url(target, tls or ca is not None), api_key=token or "none",
                                    http_client=http, max_retries=2)
        if model is None:
            listed = (await client.models.list()).data
            model = next((m.id for m in listed if getattr(m, "default", False)), listed[0].id if listed else "")
        return cls(client, model, temperature=temperature, concurrency=concurrency)

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        msgs = await asyncio.to_thread(messages, audio, prompt, system_prompt)  # reads a local file
        kwargs: dict = {"model": self.model, "messages": msgs}
        if max_tokens:
            kwargs["max_completion_tokens"] = max_tokens
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if seed is not None:
            kwargs["seed"] = seed
        if max_thinking_tokens:
            kwargs["extra_body"] = {"thinking_token_budget": max_thinking_tokens}
        async with self.slots:
            out = await self.client.chat.completions.create(**kwargs)
        choice = out.choices[0]
        msg = choice.message
        reasoning = getattr(msg, "reasoning", None) or getattr(msg, "reasoning_content", None) or ""
        return msg.content or "", reasoning, FINISH.get(choice.finish_reason, str(choice.finish_reason).upper())

    async def aclose(self) -> None:
        await self.client.close()
