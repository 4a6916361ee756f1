"""The suite's own rules: traffic goes to loopback unless the user named a deployed stack, and tokens
come from the documented places. No stack is needed for these."""

from __future__ import annotations

import json
import sys

import pytest

from tests.contract.target import NotLoopback, Target, TokenSource

pytestmark = pytest.mark.contract
DEPLOYED = {
    "PublishUrl": "https://abc.lambda-url.eu-west-1.on.aws/",
    "WebSocketUrl": "wss://abc.execute-api.eu-west-1.amazonaws.com/dev",
    "SseUrl": "https://def.lambda-url.eu-west-1.on.aws/",
}
LOCAL = {
    "PublishUrl": "http://127.0.0.1:8001/",
    "WebSocketUrl": "ws://127.0.0.1:8002/",
    "SseUrl": "http://[::1]:8003/",
}


def outputs_file(tmp_path, **stacks):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(stacks))
    return path


def test_a_deployed_stack_is_refused_unless_named_explicitly(tmp_path):
    path = outputs_file(tmp_path, **{"Streaming-dev": DEPLOYED})
    with pytest.raises(NotLoopback, match=r"abc\.lambda-url"):
        Target.load(path, TokenSource())
    named = Target.load(path, TokenSource(), remote_allowed=True)
    assert (named.stack, named.sse_url) == ("Streaming-dev", "https://def.lambda-url.eu-west-1.on.aws/events")
    assert named.publisher.region == "eu-west-1"


def test_one_remote_url_among_loopback_ones_is_refused(tmp_path):
    mixed = {**LOCAL, "SseUrl": "http://10.0.0.8:8003/"}
    with pytest.raises(NotLoopback, match=r"10\.0\.0\.8"):
        Target.load(outputs_file(tmp_path, **{"Streaming-local": mixed}), TokenSource())
    assert (
        Target.load(outputs_file(tmp_path, **{"Streaming-local": LOCAL}), TokenSource()).stack
        == "Streaming-local"
    )


def test_a_file_of_several_stacks_needs_one_named(tmp_path):
    path = outputs_file(tmp_path, **{"Streaming-dev": DEPLOYED, "Streaming-prod": DEPLOYED})
    with pytest.raises(ValueError, match="name one with --stack"):
        Target.load(path, TokenSource(), remote_allowed=True)
    assert (
        Target.load(path, TokenSource(), stack="Streaming-prod", remote_allowed=True).stack
        == "Streaming-prod"
    )


def test_a_token_comes_from_its_role_s_variable_else_from_the_command_given_the_role():
    echo = [sys.executable, "-c", "import sys; print('token-for-' + sys.argv[1])"]
    tokens = TokenSource.from_environment({"STREAMING_TOKEN_VIEWER": "from-env\n"})
    assert tokens.token("viewer") == "from-env"
    with pytest.raises(LookupError, match="STREAMING_TOKEN_ANALYST or STREAMING_TOKEN_COMMAND"):
        tokens.token("analyst")
    assert TokenSource(echo).token("analyst") == "token-for-analyst"


def test_the_command_is_split_like_a_shell_line_and_runs_in_the_environment_it_was_given():
    """The user's environment as taken before the tests replaced the AWS credentials (conftest.py)."""
    assert TokenSource.from_environment(
        {"STREAMING_TOKEN_COMMAND": "get-token --profile 'my dev'"}
    ).command == [
        "get-token",
        "--profile",
        "my dev",
    ]
    show = [sys.executable, "-c", "import os, sys; print(os.environ['AWS_PROFILE'] + ':' + sys.argv[1])"]
    assert TokenSource(show, {"AWS_PROFILE": "me"}).token("viewer") == "me:viewer"
