"""Hugging Face Hub: ``Autoencoder.from_pretrained("user/repo")`` and ``model.push_to_hub("user/repo")``.

Optional: needs the ``hub`` extra (``pip install 'gaussquant[hub]'``, i.e. ``huggingface_hub``); nothing
else in gaussquant imports it. A repo's files are the ones ``save_pretrained`` writes (config.json,
model.safetensors, README.md), so a downloaded snapshot loads exactly like a local folder. Offline
(``HF_HUB_OFFLINE=1``) a repo id is read from the Hub cache (``HF_HUB_CACHE``).

A string names a Hub repo only when no such local path exists, it has the form ``owner/name`` and ``owner``
is not a local folder (so a mistyped ``runs/x`` is reported as a missing folder, never looked up online).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.models.autoencoder import Autoencoder

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
INSTALL_HINT = "install the hub extra: pip install 'gaussquant[hub]'"


def is_repo_id(path_or_repo_id: str | os.PathLike) -> bool:
    """Whether a string is read as a Hub repo id (see the module docstring)."""
    text = os.fspath(path_or_repo_id)
    return bool(_REPO_ID.match(text)) and not Path(text).exists() and not Path(text.split("/")[0]).exists()


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401  (a lazily loaded submodule: import it by name)
    except ImportError:
        return None
    return huggingface_hub


def locate(path_or_repo_id: str | os.PathLike, *, revision: str | None = None,
           cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
           local_files_only: bool = False) -> Path:
    """A local folder as given, or the local snapshot folder of a Hub repo (downloaded or from the cache)."""
    hub_options = revision is not None or cache_dir is not None or token is not None or local_files_only
    if not is_repo_id(path_or_repo_id):
        if hub_options:
            raise ValueError(f"revision, cache_dir, token and local_files_only apply to a Hub repo id; "
                             f"{os.fspath(path_or_repo_id)!r} is a local path")
        return Path(path_or_repo_id)
    repo_id = os.fspath(path_or_repo_id)
    hf = _hub()
    if hf is None:
        raise FileNotFoundError(f"{repo_id!r} is not a local folder; to load it as a Hugging Face Hub repo, "
                                f"{INSTALL_HINT}")
    errors = hf.errors
    try:
        folder = hf.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only, library_name="gaussquant")
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder nor in the Hugging Face Hub cache, and the Hub cannot be "
            "reached (offline); download it once online or pass a local folder"
        ) from None
    except errors.RepositoryNotFoundError:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a Hugging Face Hub repo you can "
                                "read (check the name, or log in for a private repo)") from None
    except errors.RevisionNotFoundError:
        raise FileNotFoundError(f"the Hugging Face Hub repo {repo_id!r} has no revision {revision!r}") from None
    return Path(folder)


def push_to_hub(model: "Autoencoder", repo_id: str, *, private: bool | None = None,
                token: str | bool | None = None, commit_message: str = "Upload gaussquant autoencoder",
                revision: str | None = None, metrics: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """Save ``model`` (config.json, model.safetensors, README.md model card) and upload it to ``repo_id``.

    The repo is created if needed (``private`` as given). Returns the commit URL.
    """
    hf = _hub()
    if hf is None:
        raise RuntimeError(f"push_to_hub needs huggingface_hub; {INSTALL_HINT}")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repo id of the form 'owner/name'")
    from gaussquant.pretrained.save_load import save_model

    api = hf.HfApi(token=token, library_name="gaussquant")
    with tempfile.TemporaryDirectory(prefix="gaussquant-push-") as tmp:
        save_model(model, tmp, extra=extra, metrics=metrics, repo_id=repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                 revision=revision)
    return str(getattr(info, "commit_url", info))
