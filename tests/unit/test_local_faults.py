"""The local AWS's fault settings (infra/local/faults.py): read from the environment, off unless asked, each fault
switched off alone, seeded streams that replay, and the line that says how to replay a run."""

from __future__ import annotations

import pytest

from infra.local import faults
from infra.local.faults import Faults, FaultSettingError


def test_no_fault_unless_the_environment_asks_for_them():
    settings = Faults.from_env({})

    assert not settings.random_faults
    assert (settings.duplicate_rate, settings.reorder_rate, settings.throttle_rate) == (0, 0, 0)
    assert settings.transaction_conflicts is faults.DEFAULT_TRANSACTION_CONFLICTS


def test_on_the_documented_default_rates_apply_and_a_fresh_seed_is_chosen():
    one, two = Faults.from_env({"RELAIS_LOCAL_FAULTS": "on"}), Faults.from_env({"RELAIS_LOCAL_FAULTS": "on"})

    assert (one.duplicate_rate, one.reorder_rate, one.throttle_rate) == (0.05, 0.05, 0.02)
    assert one.redelivery_seconds == 5
    assert one.seed != two.seed


def test_each_fault_can_be_turned_off_alone_and_a_seed_given():
    settings = Faults.from_env(
        {
            "RELAIS_LOCAL_FAULTS": "on",
            "RELAIS_LOCAL_FAULTS_SEED": "1234",
            "RELAIS_LOCAL_THROTTLE_RATE": "0",
            "RELAIS_LOCAL_DUPLICATE_RATE": "0.5",
            "RELAIS_LOCAL_REDELIVERY_SECONDS": "0.5",
        }
    )

    assert (settings.seed, settings.throttle_rate, settings.duplicate_rate, settings.reorder_rate) == (
        1234,
        0,
        0.5,
        0.05,
    )
    assert settings.redelivery_seconds == 0.5


def test_off_wins_over_the_rates_and_conflicts_have_their_own_switch():
    settings = Faults.from_env(
        {"RELAIS_LOCAL_FAULTS": "off", "RELAIS_LOCAL_THROTTLE_RATE": "1", "RELAIS_LOCAL_TRANSACTION_CONFLICTS": "on"}
    )

    assert not settings.random_faults
    assert settings.transaction_conflicts
    assert not Faults.from_env({"RELAIS_LOCAL_TRANSACTION_CONFLICTS": "off"}).transaction_conflicts


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAIS_LOCAL_FAULTS", "maybe"),
        ("RELAIS_LOCAL_FAULTS_SEED", "abc"),
        ("RELAIS_LOCAL_THROTTLE_RATE", "2"),
        ("RELAIS_LOCAL_DUPLICATE_RATE", "-0.1"),
        ("RELAIS_LOCAL_REDELIVERY_SECONDS", "soon"),
        ("RELAIS_LOCAL_TRANSACTION_CONFLICTS", "sometimes"),
    ],
)
def test_a_meaningless_value_is_refused_naming_its_variable(name, value):
    with pytest.raises(FaultSettingError, match=name):
        Faults.from_env({"RELAIS_LOCAL_FAULTS": "on", name: value})


def test_the_environment_for_a_child_process_reads_back_as_the_same_faults():
    env = faults.environment(seed=99, throttle_rate=0.5, redelivery_seconds=1, transaction_conflicts=True)

    settings = Faults.from_env(env)

    assert (settings.seed, settings.throttle_rate, settings.duplicate_rate) == (99, 0.5, 0.05)
    assert settings.redelivery_seconds == 1
    assert settings.transaction_conflicts
    with pytest.raises(TypeError):
        faults.environment(lightning_rate=1.0)


def test_a_seed_replays_each_stream_whatever_the_other_streams_draw():
    def draws(noise: int) -> list[bool]:
        with faults.injected(seed=7, throttle_rate=0.5):
            for _ in range(noise):
                faults.happens("another", 0.5)
            return [faults.happens("one", 0.5) for _ in range(50)]

    assert draws(0) == draws(13)
    with faults.injected(seed=8):
        other = [faults.happens("one", 0.5) for _ in range(50)]
    assert other != draws(0)


def test_a_zero_rate_never_happens_and_draws_nothing():
    with faults.injected(seed=7):
        assert not any(faults.happens("one", 0.0) for _ in range(100))
        first = faults.stream("one").random()
    with faults.injected(seed=7):
        assert faults.stream("one").random() == first


def test_the_faults_in_force_are_announced_with_the_seed_to_replay_them_and_silence_means_none(capsys):
    previous = faults.current()
    try:
        faults.install_from_env({"RELAIS_LOCAL_FAULTS": "on", "RELAIS_LOCAL_FAULTS_SEED": "31337"})
        announced = capsys.readouterr().err
        faults.install_from_env({"RELAIS_LOCAL_FAULTS": "off", "RELAIS_LOCAL_TRANSACTION_CONFLICTS": "off"})
        silence = capsys.readouterr().err
    finally:
        faults.install(previous)

    assert "seed 31337" in announced
    assert "RELAIS_LOCAL_FAULTS_SEED=31337" in announced
    assert "throttling 0.02" in announced
    assert silence == ""
