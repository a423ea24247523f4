"""The hub catalogue against a real HTTP hub mirror on loopback, driven through huggingface_hub."""

import hashlib

import pytest

from desktop_app.core.hub import (
    Hub,
    HubGatedError,
    HubRepoNotFoundError,
    HubTokenError,
    HubUnreachableError,
    hub_endpoint,
)
from desktop_app.core.hub_fit import fit_verdict
from desktop_app.core.hub_tokens import save_hub_token
from desktop_app.core.memory_fit import estimate_memory
from desktop_app.core.models import check_gguf_file, default_model_path
from desktop_app.core.settings import Settings
from tests.chroma_server import free_port
from tests.hub_catalogue_repos import GATED, GATED_TOKEN, PRIVATE, SAFETENSORS, SMOL, SMOL_360, reset, served_catalogue
from tests.memory_keyring import memory_keyring


@pytest.fixture(scope="module")
def served():
    with served_catalogue() as (mirror, url):
        yield mirror, url


@pytest.fixture
def mirror(served, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return reset(served[0])


@pytest.fixture
def url(served, mirror):
    return served[1]


@pytest.fixture(autouse=True)
def ring():
    with memory_keyring() as ring:
        yield ring


def api_requests(mirror, prefix):
    return [(path, headers) for method, path, headers in mirror.requests if path.startswith(prefix)]


def test_search_finds_gguf_repositories_through_the_endpoint_setting(mirror, url, paths):
    settings = Settings.load(paths.settings_file)
    settings.set("hub.endpoint", url)
    found = Hub.from_settings(settings).search("SmolLM2")
    assert [r.repo_id for r in found] == [SMOL_360, SMOL]  # most downloaded first; the safetensors repo is not GGUF
    assert SAFETENSORS not in [r.repo_id for r in found]
    smol = found[1]
    assert (smol.downloads, smol.likes, smol.gated) == (5_000, 42, False)
    assert smol.license == "apache-2.0" and "gguf" in smol.tags and smol.updated.year == 2024
    [(path, _)] = api_requests(mirror, "/api/models?")
    assert "filter=gguf" in path and "search=SmolLM2" in path and "sort=downloads" in path


def test_search_follows_hf_endpoint_read_when_called(mirror, url, monkeypatch):
    import huggingface_hub  # noqa: F401 -- imported before the variable is set: it must not matter

    monkeypatch.setenv("HF_ENDPOINT", url)
    found = Hub(hub_endpoint("")).search("llama", limit=5)
    assert [r.repo_id for r in found] == [GATED]
    assert found[0].gated == "manual" and found[0].license == "llama3.2"
    assert api_requests(mirror, "/api/models?")


def test_search_limit_and_no_match(mirror, url):
    assert len(Hub(url).search("gguf", limit=1)) == 1
    assert Hub(url).search("no-such-model") == []


def test_details_give_the_models_with_sizes_sha256_licence_and_card_summary(mirror, url):
    details = Hub(url).details(SMOL)
    repo = mirror.repos[SMOL]
    assert details.revision == repo.sha and details.url == f"{url}/{SMOL}"
    assert details.license == "apache-2.0" and details.gated is False and details.gate_message is None
    assert details.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert details.summary.startswith("SmolLM2 is a family of compact language models")
    assert [m.name for m in details.models] == ["IQ2_XXS", "Q4_1", "Q8_0"]  # by size
    q4 = details.models[1]
    real = default_model_path()
    assert q4.size == real.stat().st_size and q4.quantization == "Q4_1"
    assert q4.first.sha256 == hashlib.sha256(real.read_bytes()).hexdigest()
    assert q4.first.revision == repo.sha and q4.first.path == "SmolLM2-135M-Instruct-Q4_1.gguf"
    q8 = details.models[2]
    assert [p.path[-19:] for p in q8.parts] == ["Q8_0-00001-of-00002.gguf"[-19:], "Q8_0-00002-of-00002.gguf"[-19:]]
    assert q8.size == 2 * real.stat().st_size
    [q6] = details.incomplete
    assert q6.name == "Q6_K" and q6.extra["missing_parts"] == (2,)
    assert [f.path for f in details.projectors] == ["mmproj-SmolLM2-135M-f16.gguf"]
    assert {f.path for f in details.files} >= {"README.md", "config.json"}
    readme = next(f for f in details.files if f.path == "README.md")
    assert readme.sha256 is None and readme.size == len(repo.files["README.md"])


def test_a_repository_that_does_not_exist_or_is_private_says_so(mirror, url):
    with pytest.raises(HubRepoNotFoundError, match=f"There is no repository nobody/nothing on {url}"):
        Hub(url).details("nobody/nothing")
    with pytest.raises(HubRepoNotFoundError, match="If it is private, add your token with `parley models login`"):
        Hub(url).details(PRIVATE)
    with pytest.raises(HubRepoNotFoundError, match="not a repository name"):
        Hub(url).details("a/b/c")


def test_a_gated_repository_says_what_to_accept_and_refuses_its_files_without_a_token(mirror, url):
    hub = Hub(url)
    details = hub.details(GATED)  # the entry is open to all, as on the hub
    assert details.gated == "manual" and details.license == "llama3.2"
    assert details.gate_message.startswith(f"{GATED} is gated: accept its licence (llama3.2) at {url}/{GATED}")
    assert "add your token with `parley models login`" in details.gate_message
    assert "Acceptable Use Policy" in details.gate_message  # the authors' own prompt
    with pytest.raises(HubGatedError) as refused:
        hub.read_header(details.models[0])
    assert str(refused.value) == (f"{GATED} is gated: accept the licence at {url}/{GATED}, "
                                  "then add your token with `parley models login`.")


def test_a_token_from_the_keyring_opens_a_gated_repository(mirror, url):
    save_hub_token(url, GATED_TOKEN)
    hub = Hub(url)
    details = hub.details(GATED)
    assert "Your saved token is used" in details.gate_message
    header = hub.read_header(details.models[0])
    assert header.architecture == "llama"
    reads = [h for p, h in api_requests(mirror, f"/{GATED}/resolve/") if p.endswith(".gguf")]
    assert reads and all(h["authorization"] == f"Bearer {GATED_TOKEN}" for h in reads)


def test_a_refused_token_is_named_as_the_problem(mirror, url):
    save_hub_token(url, "hf_wrong")
    hub = Hub(url)
    with pytest.raises(HubTokenError, match=f"refused your token for {GATED}: accept the licence at {url}/{GATED} "
                                            "with the account the token belongs to"):
        hub.read_header(hub.details(GATED).models[0])


def test_the_header_by_range_gives_the_fit_that_the_local_file_gives(mirror, url):
    hub = Hub(url)
    q4 = hub.details(SMOL).models[1]
    header = hub.read_header(q4)
    local = check_gguf_file(default_model_path())
    assert (header.architecture, header.scalars, header.tensor_shapes, header.tensor_bytes, header.file_size) == \
        (local.architecture, local.scalars, local.tensor_shapes, local.tensor_bytes, local.file_size)
    # Two ranges: the first megabyte ends inside SmolLM2's 1.8 MB header, so the next one is fetched.
    ranges = [h.get("range") for p, h in api_requests(mirror, f"/{SMOL}/resolve/") if p.endswith("Q4_1.gguf")]
    assert ranges == ["bytes=0-1048575", "bytes=1048576-2097151"]
    verdict = fit_verdict(q4, header, available_ram=16 * 10**9, context_length=4096)
    expected = estimate_memory(local, 4096)
    assert verdict.estimate == expected
    assert verdict.needed == q4.size + expected.kv_cache + expected.compute + expected.output
    assert verdict.level == "fits" and verdict.text.startswith("fits: needs about 296 MB at 4,096 tokens")


def test_a_server_that_ignores_range_is_read_only_as_far_as_the_header(mirror, url):
    mirror.faults.ignore_range = True
    hub = Hub(url)
    q4 = hub.details(SMOL).models[1]
    assert hub.read_header(q4).tensor_bytes == check_gguf_file(default_model_path()).tensor_bytes


def test_whoami_names_the_account_refuses_a_bad_token_and_tolerates_a_mirror_without_it(mirror, url):
    assert Hub(url, GATED_TOKEN).whoami() == "mirror-user"
    with pytest.raises(HubTokenError, match="refused your token"):
        Hub(url, "hf_wrong").whoami()
    mirror.faults.whoami_missing = True
    assert Hub(url, "hf_anything").whoami() is None


def test_an_unreachable_hub_is_named_with_the_setting_to_change_at_once():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(HubUnreachableError) as search:
        Hub(endpoint).search("smollm2")  # at once: not after huggingface_hub's 20 s of retries
    message = str(search.value)
    assert message.startswith(f"The model hub at {endpoint} cannot be reached")
    assert "hub.endpoint setting" in message and "HF_ENDPOINT" in message
    with pytest.raises(HubUnreachableError, match=f"The model hub at {endpoint} cannot be reached"):
        Hub(endpoint).details(SMOL)
