"""Hugging Face Hub source: a pinned snapshot, only the files a build needs, via the standard HF cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from build_pipeline.errors import BuildError
from build_pipeline.sources.hf_folder import NEEDED_FILES


def download(repo: str, revision: str) -> Path:
    """Return the local snapshot folder; honours HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE like every HF tool."""
    # Heavy (huggingface_hub + its HTTP client, ~0.25 s) and needed only for Hub sources.
    from huggingface_hub import snapshot_download

    with _hub_errors(repo, revision):
        return Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=NEEDED_FILES))
    raise AssertionError("unreachable")


def download_file(repo: str, revision: str, filename: str) -> Path:
    """One file (a GGUF of a GGUF repo) at the pinned revision, through the standard HF cache."""
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo, revision):
        return Path(hf_hub_download(repo_id=repo, revision=revision, filename=filename))
    raise AssertionError("unreachable")


@contextmanager
def _hub_errors(repo: str, revision: str) -> Iterator[None]:
    """huggingface_hub's exceptions -> BuildError naming the repo, the revision and the fix."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        yield
    except RepositoryNotFoundError:
        raise BuildError(
            f"Hugging Face repository {repo} was not found (or needs a login)",
            "check `repo` in the model config; for gated models run `huggingface-cli login` first",
        ) from None
    except LocalEntryNotFoundError:
        raise BuildError(
            f"{repo}@{revision} is not in the local Hugging Face cache and the Hub cannot be reached",
            "connect to the network (and unset HF_HUB_OFFLINE), set HF_HOME to a cache that holds it, "
            "or build from a local copy with `build --source-file FILE.gguf`",
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise BuildError(
            f"downloading {repo}@{revision} failed: {exc}",
            "check the network and the pinned revision in the model config, then run the build again",
        ) from None
