"""Launch, download, publish: the repository's address lives in _config.yml, the Pages workflow builds with the
README's own `make book`, and the README links the book those two make."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _config():
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _pages_url(repository_url: str) -> str:
    owner, name = repository_url.rstrip("/").split("/")[-2:]
    return f"https://{owner}.github.io/{name}/"


def test_the_config_carries_the_repository_and_the_launch_buttons():
    config = _config()
    assert config["repository"]["url"].startswith("https://github.com/")
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert config["html"]["use_repository_button"]  # the download buttons (.md, .pdf) are the theme's default


def test_the_pages_workflow_parses_and_builds_with_make_book():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    assert any(step.get("run", "").strip() == "make book" for step in steps)
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert upload["with"]["path"] == "_build/html"
    assert workflow["jobs"]["deploy"]["needs"] == "build"


def test_the_readme_links_the_published_book_of_this_repository():
    assert _pages_url(_config()["repository"]["url"]) in (ROOT / "README.md").read_text()


def test_binder_installs_normlib_from_the_checkout():
    post_build = (ROOT / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build
    assert (ROOT / "environment.yml").exists()
