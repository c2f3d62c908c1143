#!/usr/bin/env python3
"""End-to-end check of Portcullis with the official `openai` Python SDK.

Run by `portcullis/tests/sdk.rs` against a real `portcullis serve` in front of
the mock provider. Needs PORTCULLIS_URL (the gateway, without `/v1`) and
PORTCULLIS_KEY (a gateway client key). Exits non-zero on the first failure.
"""

import os
import sys
import traceback


def main() -> int:
    try:
        import openai
    except ImportError:
        print(
            "the `openai` package is not installed; run scripts/test, which installs it",
            file=sys.stderr,
        )
        return 3

    url = os.environ["PORTCULLIS_URL"].rstrip("/") + "/v1"
    key = os.environ["PORTCULLIS_KEY"]
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)
    print(f"openai {openai.__version__} against {url}")

    checks = []

    def check(fn):
        checks.append(fn)
        return fn

    @check
    def chat_completion():
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hello!"}],
        )
        assert r.object == "chat.completion", r
        assert r.choices[0].message.role == "assistant", r
        assert r.choices[0].message.content, r
        assert r.choices[0].finish_reason == "stop", r
        assert r.usage is not None and r.usage.completion_tokens > 0, r.usage
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    @check
    def chat_completion_with_provider_prefix():
        r = client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
        )
        assert r.choices[0].message.content, r

    @check
    def streamed_chat_completion_with_usage():
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream, please."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = []
        usage = None
        chunks = 0
        for chunk in stream:
            chunks += 1
            assert chunk.object == "chat.completion.chunk", chunk
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    text.append(choice.delta.content)
        assert chunks > 2, chunks
        assert text, "no content streamed"
        assert usage is not None, "no usage chunk"
        assert usage.completion_tokens == len("".join(text).split()), (usage, text)

    @check
    def embeddings():
        r = client.embeddings.create(
            model="text-embedding-3-small", input=["one", "two"]
        )
        assert len(r.data) == 2, r
        assert all(len(d.embedding) > 0 for d in r.data), r
        assert isinstance(r.data[0].embedding[0], float), r.data[0]
        assert r.usage.prompt_tokens > 0, r.usage

    @check
    def files_upload_retrieve_content_delete():
        content = b'{"prompt": "hello", "completion": "world"}\n'
        f = client.files.create(file=("data.jsonl", content), purpose="fine-tune")
        assert f.id.startswith("file-"), f
        assert f.bytes == len(content), f
        assert f.filename == "data.jsonl", f
        got = client.files.retrieve(f.id)
        assert got.id == f.id and got.purpose == "fine-tune", got
        listed = [x.id for x in client.files.list()]
        assert f.id in listed, listed
        body = client.files.content(f.id)
        assert body.read() == content, body
        d = client.files.delete(f.id)
        assert d.deleted and d.id == f.id, d
        try:
            client.files.retrieve(f.id)
        except openai.NotFoundError:
            pass
        else:
            raise AssertionError("a deleted file can still be retrieved")

    @check
    def models_list():
        ids = [m.id for m in client.models.list()]
        for want in ("gpt-4o-mini", "text-embedding-3-small"):
            assert want in ids, ids
        m = client.models.retrieve("gpt-4o-mini")
        assert m.id == "gpt-4o-mini", m

    @check
    def unknown_model_is_not_found():
        try:
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "x"}]
            )
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
            assert e.code == "model_not_found", e.body
        else:
            raise AssertionError("an unknown model was accepted")

    @check
    def wrong_key_is_authentication_error():
        bad = openai.OpenAI(
            base_url=url, api_key="pcs_not-a-real-key", max_retries=0, timeout=30
        )
        try:
            bad.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e
            assert e.code == "invalid_api_key", e.body
            assert "pcs_not-a-real-key" not in str(e), str(e)
        else:
            raise AssertionError("a wrong key was accepted")

    failed = 0
    for fn in checks:
        try:
            fn()
            print(f"ok     {fn.__name__}")
        except Exception:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"FAILED {fn.__name__}", file=sys.stderr)
            traceback.print_exc()
    if failed:
        print(f"sdk: {failed} of {len(checks)} checks FAILED", file=sys.stderr)
    else:
        print(f"sdk: all {len(checks)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
