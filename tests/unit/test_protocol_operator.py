"""Operator changes on the in-memory store: the shared contract, and what they cost in requests."""

from __future__ import annotations

from dataclasses import replace

import pytest

from leanops.protocol import Protocol
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock
from tests.support.operator_contract import ACTOR, OperatorContract, run
from tests.support.protocol_contract import LEASE_S, SKEW_MS, new_topic


class TestOperatorInMemory(OperatorContract):
    @pytest.fixture
    def store(self):
        return InMemoryStore()

    @pytest.fixture
    def make_protocol(self, store):
        def make(clock=None, skew_margin_ms=SKEW_MS):
            return Protocol(store, clock=clock or FakeClock(), skew_margin_ms=skew_margin_ms)

        return make

    @pytest.fixture
    def forget_position(self, store):
        def forget(protocol, topic, seq):
            records = store.outputs_by_topic[topic]
            records[seq] = replace(records[seq], position=None)

        return forget


def test_a_paused_acquire_costs_the_one_request_an_acquire_costs():
    store = InMemoryStore()
    protocol, topic = Protocol(store, clock=FakeClock()), new_topic()
    run(protocol, topic, "exec-a", "k#1")
    protocol.pause(topic, actor=ACTOR, reason="hold")
    before = store.requests
    protocol.acquire(topic, "exec-b", LEASE_S)
    assert store.requests - before == 1
