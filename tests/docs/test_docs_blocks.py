"""The Markdown block reader used by the docs tests: fences, titles, commands, console output."""

import pytest
from docs_blocks import bash_commands, console_session, parse_command, read_blocks


def test_read_blocks_languages_titles_and_lines(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "# T\n\n```python title=\"a.py\"\nx = 1\n```\n\ntext\n\n```bash\ndetlab list\n```\n"
        "```text\nnot run\n```\n"
    )
    blocks = read_blocks(page)
    assert [(b.lang, b.title, b.line) for b in blocks] == [
        ("python", "a.py", 4), ("bash", None, 10), ("text", None, 13),
    ]
    assert blocks[0].body == "x = 1\n"


@pytest.mark.parametrize(
    "line, argv, env",
    [
        ("detlab list heads", ["list", "heads"], {}),
        ("PYTHONPATH=. detlab train r.py a=1  # note", ["train", "r.py", "a=1"],
         {"PYTHONPATH": "."}),
        ("detlab show r.py 'm.x=[1, 2]' '+k=\"none\"'", ["show", "r.py", "m.x=[1, 2]", '+k="none"'],
         {}),
    ],
)
def test_parse_command(line, argv, env):
    command = parse_command(line)
    assert (command.argv, command.env) == (argv, env)


@pytest.mark.parametrize("line", ["python train.py", "ls runs", "PYTHONPATH=. make docs"])
def test_parse_command_rejects_other_programs(line):
    with pytest.raises(ValueError, match="not a detlab command"):
        parse_command(line)


def test_bash_commands_skip_comments_and_join_continuations():
    body = "# train\ndetlab train r.py \\\n  a=1\n\ndetlab eval c.ckpt\n"
    assert [c.argv for c in bash_commands(body)] == [["train", "r.py", "a=1"], ["eval", "c.ckpt"]]


def test_console_session_pairs_commands_with_output():
    body = "$ detlab show r.py x=1\nerror: bad\n$ detlab list\nheads:\n"
    session = console_session(body)
    assert [(c.argv, out) for c, out in session] == [
        (["show", "r.py", "x=1"], ["error: bad"]), (["list"], ["heads:"]),
    ]
