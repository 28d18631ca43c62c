"""The local broker launcher."""

from deploy.broker import _cluster_id


def test_kraft_cluster_ids_never_look_like_options() -> None:
    ids = {_cluster_id() for _ in range(3000)}  # ~1 in 64 raw ids starts with '-'
    assert len(ids) == 3000 and not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


def test_containers_can_be_turned_off(monkeypatch) -> None:
    from tests.conftest import docker_answers

    monkeypatch.setenv("FLOWLOGS_TEST_CONTAINERS", "0")
    assert docker_answers() is False
