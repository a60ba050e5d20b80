"""Talks to a running skillhive with the official `openai` package, as real clients do.

Usage: python openai_client.py BASE_URL MODEL TOKEN
"""

import json
import sys

import openai

base_url, model, token = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=token, timeout=300)
checks = 0

# A long system prompt and content-part arrays, as agent frameworks send them.
system = "You are a helpful assistant. " + " ".join(
    f"Rule {i}: answer briefly and politely." for i in range(40)
)
reply = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "text", "text": "Say hello."}]},
    ],
    max_completion_tokens=16,
)
assert reply.choices[0].message.content, reply
assert reply.usage.prompt_tokens > 300, reply.usage
assert 1 <= reply.usage.completion_tokens <= 16, reply.usage
checks += 1

# Streaming with usage in the final chunk.
text, usage = "", None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Name three animals."}],
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
assert text.strip(), "empty stream"
assert usage is not None and usage.completion_tokens >= 1, usage
checks += 1

# A tool schema with enum, anyOf and const.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["c", "f"]},
                    "days": {"anyOf": [{"type": "integer"}, {"const": "today"}]},
                },
                "required": ["city", "unit", "days"],
            },
        },
    }
]
reply = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    max_tokens=48,
)
call = reply.choices[0].message.tool_calls[0]
arguments = json.loads(call.function.arguments)
assert call.function.name == "get_weather" and arguments["unit"] in ("c", "f"), arguments
checks += 1

# The model list, and a typed error for an unknown model.
assert model in [m.id for m in client.models.list().data]
checks += 1
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as error:
    assert error.status_code == 404
checks += 1

# A wrong key is a typed authentication error.
try:
    openai.OpenAI(base_url=base_url + "/v1", api_key="sh-wrong").models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.status_code == 401
checks += 1

print(f"openai client: {checks} checks passed")
