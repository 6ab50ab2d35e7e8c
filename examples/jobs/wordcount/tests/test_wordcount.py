"""How a project tests its DataSphere job: run the config locally with the `dsjobs` fixture, check the outputs."""
import json
from pathlib import Path

CONFIG = Path(__file__).parent.parent / "config.yaml"


def test_counts_the_top_words(dsjobs):
    result = dsjobs.run(CONFIG, args={"TOP": "2"})
    assert result.return_code == 0, result.stderr
    assert json.loads(result.outputs["counts.json"].read_text()) == {"the": 4, "fox": 2}
    assert result.progress == {"progress": 100, "message": "16 words"}


def test_another_text(dsjobs, tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("b a b c b a")
    result = dsjobs.run(CONFIG, vars={"TEXT": str(text)}, args={"TOP": "1"})
    assert json.loads(result.outputs["counts.json"].read_text()) == {"b": 3}
