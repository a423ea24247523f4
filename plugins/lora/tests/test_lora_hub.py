"""LoRA adapters from the hub, through a real hub mirror on loopback driven by huggingface_hub:
search with verdicts before any download, download, conversion on arrival, and the library."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from desktop_app.api import Hub
from desktop_app.cli import main
from desktop_app.core.engine import Engine, LoadConfig
from desktop_app.core.models import default_model_path
from desktop_app.core.settings import Settings
from desktop_app.core.turn import Adapter, ChatMessage, GenerationOptions
from desktop_app_lora.adapters import AdapterError, read_adapter_info
from desktop_app_lora.hub_adapters import COMPATIBLE, INCOMPATIBLE, PROBABLY
from desktop_app_lora.hub_download import DownloadCancelled, download_adapter, find_in_repo
from desktop_app_lora.hub_search import find_adapters
from desktop_app_lora.library import AdapterLibrary
from lora_hub_repos import (
    BIG,
    FRENCH,
    PIRATE,
    PIRATE_FILE,
    QUANTS,
    SMOL_BASE,
    TAGGED,
    TAGGED_FOLDER,
    reset,
    served_adapters,
)
from lora_test_files import make_peft, write_safetensors
from tests.hub_mirror import MirrorRepo
from tests.memory_keyring import memory_keyring

MODEL = default_model_path()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_adapters(tmp_path_factory.mktemp("hub-adapters")) as (mirror, url):
        yield mirror, url


@pytest.fixture
def mirror(served, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    mirror = reset(served[0])
    added = set(mirror.repos)
    yield mirror
    for repo in set(mirror.repos) - added:  # a test's own repositories go with it
        del mirror.repos[repo]


@pytest.fixture(autouse=True)
def ring():
    with memory_keyring() as ring:
        yield ring


@pytest.fixture
def hub(mirror, served):
    return Hub(served[1])


@pytest.fixture
def library(tmp_path):
    return AdapterLibrary(tmp_path / "adapters")


@pytest.fixture
def manager(paths, served, library, tmp_path):
    """The app's kind of download manager, with the plugin's installer for adapters."""
    from desktop_app.core.downloads import DownloadManager
    from desktop_app.core.models import ModelLibrary
    from desktop_app_lora.hub_install import make_installer

    m = DownloadManager(paths, ModelLibrary(paths), endpoint=served[1], retries=1, backoff=0.05,
                        installers={"adapter": make_installer(library, tmp_path / "cache")})
    yield m
    m.close()


def file_requests(mirror, repo, path):
    """(method, Range header) of every request for one file's bytes."""
    return [(method, headers.get("range")) for method, url, headers in mirror.requests
            if url.startswith(f"/{repo}/resolve/") and url.endswith("/" + path)]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# -- search -----------------------------------------------------------------------------------
def test_search_finds_adapters_for_the_loaded_model_with_their_verdicts(hub, mirror):
    found = {c.repo_id: c for c in find_adapters(hub, MODEL)}
    assert set(found) == {FRENCH, PIRATE, BIG}  # by the model's family name; the GGUF model repo is not an adapter
    assert found[FRENCH].kind == "peft" and found[FRENCH].compatibility.verdict == COMPATIBLE
    assert SMOL_BASE in found[FRENCH].compatibility.reason
    assert found[PIRATE].kind == "gguf" and found[PIRATE].selector == PIRATE_FILE
    assert found[PIRATE].compatibility.verdict == PROBABLY
    assert found[BIG].compatibility.verdict == INCOMPATIBLE and not found[BIG].compatibility.usable
    assert "32 layers" in found[BIG].compatibility.reason
    ordered = [c.compatibility.verdict for c in find_adapters(hub, MODEL)]
    assert ordered == [COMPATIBLE, PROBABLY, INCOMPATIBLE]  # the ones that fit first, though BIG has most downloads
    assert QUANTS not in found


def test_a_base_model_finds_its_adapters_by_the_hubs_tag(hub, mirror):
    found = {c.repo_id: c for c in find_adapters(hub, MODEL, SMOL_BASE)}
    assert TAGGED in found  # its name says nothing of SmolLM2
    assert found[TAGGED].folder == TAGGED_FOLDER and found[TAGGED].compatibility.verdict == COMPATIBLE
    searched = [url for method, url, _ in mirror.requests if url.startswith("/api/models?")]
    assert any("base_model%3Aadapter%3AHuggingFaceTB%2FSmolLM2-135M-Instruct" in url for url in searched)


def test_the_search_reads_only_the_heads_of_the_weights(hub, mirror):
    find_adapters(hub, MODEL)
    for repo, path in ((FRENCH, "adapter_model.safetensors"), (BIG, "adapter_model.safetensors"),
                       (PIRATE, PIRATE_FILE)):
        asked = file_requests(mirror, repo, path)
        assert asked, path
        for method, wanted in asked:
            assert method == "GET" and wanted is not None and wanted.startswith("bytes=0-")
            assert int(wanted.split("-")[1]) < 256 * 1024
    assert not file_requests(mirror, QUANTS, "SmolLM2-135M-Q4_1.gguf")


def test_a_search_with_nothing_there_finds_nothing(hub, mirror):
    assert find_adapters(hub, MODEL, "no-such-adapter") == []


def test_an_unreachable_hub_says_so(tmp_path):
    from desktop_app.api import HubUnreachableError
    from tests.chroma_server import free_port

    with pytest.raises(HubUnreachableError, match="cannot be reached"):
        find_adapters(Hub(f"http://127.0.0.1:{free_port()}"), MODEL)


def test_a_cancelled_search_stops(hub, mirror):
    from desktop_app_lora.hub_search import SearchCancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SearchCancelled):
        find_adapters(hub, MODEL, cancel=cancel)


# -- download ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    e = Engine()
    e.load(MODEL, LoadConfig(context_length=512, seed=1))
    yield e
    e.unload()


def test_a_peft_adapter_is_downloaded_converted_and_loads_on_the_real_model(hub, mirror, manager, library, tmp_path,
                                                                            engine):
    candidate = find_in_repo(hub, FRENCH, None, MODEL)
    seen = []
    entry = download_adapter(manager, candidate, library, MODEL, progress=seen.append)
    assert library.find(entry.name) is entry and entry.name == "smollm2-135m-french-lora"
    assert FRENCH in entry.source and "converted for" in entry.source
    info = read_adapter_info(library.path(entry))
    assert info.rank == 4 and info.layers == 30 and info.targets == ["attn_k", "attn_output", "attn_q", "attn_v"]
    assert seen[-1].done == seen[-1].total == candidate.size
    assert seen[-1].message == f"Downloaded, checked and added as {entry.name}."
    # The weights were fetched whole once, by the download (not by the search's look at their head).
    assert ("GET", None) in file_requests(mirror, FRENCH, "adapter_model.safetensors")
    assert leftovers(tmp_path / "cache") == [] and leftovers(manager.folder) == []
    assert manager.downloads()[-1].state.value == "done" and manager.downloads()[-1].entry_name == entry.name
    assert engine.set_adapters([Adapter(entry.name, str(library.path(entry)), 1.0)]) is True
    done = list(engine.stream_chat([ChatMessage("user", "Hello")], GenerationOptions(temperature=0.0, max_tokens=4,
                                                                                     seed=1)))[-1]
    assert done.finish_reason in ("stop", "length")
    engine.set_adapters([])


def test_a_gguf_adapter_is_added_as_it_is(hub, mirror, manager, library):
    candidate = find_in_repo(hub, PIRATE, PIRATE_FILE, MODEL)
    entry = download_adapter(manager, candidate, library, MODEL, name="pirate")
    assert entry.name == "pirate"
    assert library.path(entry).read_bytes() == mirror.repos[PIRATE].files[PIRATE_FILE]


def test_an_adapter_in_a_folder_is_picked_by_the_folder(hub, mirror, manager, library):
    candidate = find_in_repo(hub, TAGGED, TAGGED_FOLDER, MODEL)
    assert candidate.folder == TAGGED_FOLDER and len(candidate.files) == 2
    entry = download_adapter(manager, candidate, library, MODEL)
    assert read_adapter_info(library.path(entry)).targets == ["attn_q", "attn_v"]


def test_an_incompatible_adapter_is_refused_before_any_download(hub, mirror, manager, library):
    candidate = find_in_repo(hub, BIG, None, MODEL)
    with pytest.raises(AdapterError, match="does not fit .* so it was not downloaded: .*32 layers"):
        download_adapter(manager, candidate, library, MODEL)
    asked = file_requests(mirror, BIG, "adapter_model.safetensors")
    assert asked and all(wanted is not None and int(wanted.split("-")[1]) < 256 * 1024 for _, wanted in asked)
    assert not file_requests(mirror, BIG, "adapter_config.json")[1:]  # read once, by the look before
    assert library.entries() == [] and manager.downloads() == []


def test_a_wrong_checksum_adds_nothing(hub, mirror, manager, library, tmp_path):
    repo = mirror.add_repo(MirrorRepo("mallory/smollm2-damaged-lora", tags=["peft", "lora"],
                                      files=dict(mirror.repos[FRENCH].files),
                                      wrong_sha256={"adapter_model.safetensors"}))
    candidate = find_in_repo(hub, repo.repo_id, None, MODEL)
    assert candidate.compatibility.usable
    with pytest.raises(AdapterError, match="did not match the hub's checksum"):
        download_adapter(manager, candidate, library, MODEL)
    assert library.entries() == [] and leftovers(tmp_path / "cache") == []
    assert not [p for p in leftovers(manager.folder) if p.name.startswith("adapter_model")]


def test_a_peft_adapter_that_cannot_be_converted_adds_nothing_and_says_why(hub, mirror, manager, library, tmp_path):
    # Its header fits the model (so the search offers it); its weights are NaN, which the converter refuses.
    folder = make_peft(tmp_path / "nan", rank=2, layers=1, modules=("q_proj",))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    write_safetensors(folder / "adapter_model.safetensors", {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((2, 576)),
        key: np.full((576, 2), np.nan)})
    repo = mirror.add_repo(MirrorRepo("mallory/smollm2-nan-lora", tags=["peft", "lora"],
                                      files={p.name: p.read_bytes() for p in folder.iterdir()}))
    candidate = find_in_repo(hub, repo.repo_id, None, MODEL)
    assert candidate.compatibility.usable
    with pytest.raises(AdapterError, match="was downloaded, but it cannot be converted .*NaN.*Nothing was added"):
        download_adapter(manager, candidate, library, MODEL)
    assert library.entries() == [] and leftovers(tmp_path / "cache") == [] and leftovers(manager.folder) == []
    assert leftovers(library.folder) == [library.index_file] or leftovers(library.folder) == []


def test_a_download_cancelled_mid_file_adds_nothing(hub, mirror, manager, library, tmp_path):
    candidate = find_in_repo(hub, FRENCH, None, MODEL)
    mirror.faults.chunk_size, mirror.faults.chunk_delay = 16 * 1024, 0.02
    cancel = threading.Event()

    def watch(p):
        if p.done > 0:  # bytes are arriving: the user cancels
            cancel.set()

    with pytest.raises(DownloadCancelled, match="nothing was added"):
        download_adapter(manager, candidate, library, MODEL, progress=watch, cancel=cancel)
    assert library.entries() == [] and leftovers(tmp_path / "cache") == [] and leftovers(manager.folder) == []


def test_a_dropped_connection_resumes_and_the_adapter_arrives(hub, mirror, manager, library):
    candidate = find_in_repo(hub, FRENCH, None, MODEL)
    mirror.faults.drop_after_bytes, mirror.faults.drops_left = 500_000, 1
    entry = download_adapter(manager, candidate, library, MODEL)
    assert read_adapter_info(library.path(entry)).rank == 4
    ranges = [wanted for method, wanted in file_requests(mirror, FRENCH, "adapter_model.safetensors") if method == "GET"]
    assert any(wanted and not wanted.startswith("bytes=0-") for wanted in ranges)  # went on from where it stopped


def test_a_repository_with_several_adapters_asks_which(hub, mirror):
    mirror.add_repo(MirrorRepo("alice/two-adapters", tags=["peft"], files={
        **{f"early/{k}": v for k, v in mirror.repos[FRENCH].files.items() if k != "README.md"},
        **{f"late/{k}": v for k, v in mirror.repos[FRENCH].files.items() if k != "README.md"}}))
    with pytest.raises(AdapterError, match="several adapters; name the one to download: early, late"):
        find_in_repo(hub, "alice/two-adapters", None, MODEL)
    with pytest.raises(AdapterError, match="has no adapter 'middle'. Its adapters: early, late"):
        find_in_repo(hub, "alice/two-adapters", "middle", MODEL)
    assert find_in_repo(hub, "alice/two-adapters", "late", MODEL).folder == "late"


# -- the command line -------------------------------------------------------------------------
@pytest.fixture
def endpoint(served, mirror, paths):
    settings = Settings.load(paths.settings_file)
    settings.set("hub.endpoint", served[1])
    settings.save()
    return served[1]


def test_cli_search_and_download(endpoint, capsys):
    assert main(["lora", "search"]) == 0
    out = capsys.readouterr().out
    assert f"LoRA adapters for it on {endpoint}, checked against {MODEL.name}:" in out
    assert f"Compatible           {FRENCH}  (PEFT, 1.9 MB" in out
    assert f"Not compatible       {BIG}  (PEFT" in out and "32 layers" in out
    assert main(["lora", "download", BIG]) == 1
    assert "so it was not downloaded" in capsys.readouterr().err
    assert main(["lora", "download", FRENCH, "--name", "french"]) == 0
    assert "Added french: rank 4" in capsys.readouterr().out
    assert main(["lora", "list"]) == 0
    assert f"french\trank 4, alpha 8, attn_k,attn_output,attn_q,attn_v" in capsys.readouterr().out


def test_cli_download_of_an_unknown_repository_says_so(endpoint, capsys):
    assert main(["lora", "download", "nobody/nothing"]) == 1
    assert "There is no repository nobody/nothing" in capsys.readouterr().err
