"""The README's engine example runs as written, so the docs cannot rot."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tracker_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "tracker.track(" in b)
    exec(compile(example, str(README), "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2"]
    assert all("(120, 160)" in line and "presence" in line for line in lines)
    # the bundled weights track: both prompted objects are still seen three frames later
    assert all(float(line.split("presence ")[1].split()[0]) > 0.5 for line in lines)


def test_readme_names_the_two_commands_first():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == [
        "make demo", "make test"]
