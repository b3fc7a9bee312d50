"""A CPU model of the Hopper forward's mbarrier protocol (src/cuda/sm90: forward_producer_sm90.cuh,
forward_consumer_sm90.cuh): the producer thread (Q per unit, then K(0), K(1), V(0), K(2), V(1), ..., V(last)),
the two consumer warpgroups (ping-pong turns on named barriers; K released after its S GEMM, V after its
P V, Q after the unit's last S; V(n - 1) waited for between the S and P V issues), and TMA completions at
random times. Runs random interleavings over random unit sequences (units without boxes, one-stage units,
long ones) and ring depths (K/V stages 2, 3, 5; Q buffers 1, 2) and checks: no deadlock, every GEMM reads
the data of its own stage, no TMA writes a buffer that a GEMM may still read. Edit it together with the
kernel's pipeline; no GPU needed.

    python3 tools/sm90_forward_pipeline_model.py [SEEDS]
"""
import random
import sys


class Barrier:
    """mbarrier: arrival count, transaction bytes, phase; try_wait.parity(P) succeeds once phase P is over."""

    def __init__(self, count):
        self.count, self.pending, self.tx, self.phase = count, count, 0, 0

    def arrive(self, n=1, tx=0):
        self.pending -= n
        self.tx += tx
        assert self.pending >= 0, "too many arrivals in one phase"
        self._check()

    def complete_tx(self, nbytes):
        self.tx -= nbytes
        assert self.tx >= 0
        self._check()

    def _check(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def done(self, parity):
        return (self.phase & 1) != parity


def run(units, S, QS, seed):
    """units: stages per unit (0: a unit without boxes, which still has one, empty, stage)."""
    rnd = random.Random(seed)
    kf, ke = [Barrier(1) for _ in range(S)], [Barrier(8) for _ in range(S)]
    vf, ve = [Barrier(1) for _ in range(S)], [Barrier(8) for _ in range(S)]
    qf, qe = [Barrier(1) for _ in range(QS)], [Barrier(8) for _ in range(QS)]
    kbuf, vbuf, qbuf = [None] * S, [None] * S, [None] * QS
    readers = {}  # (operand, slot) -> warpgroups whose GEMM may still read it
    inflight = []  # TMA loads: (buffers, slot, tag, barrier, bytes)
    turns = [0, 0]  # named barriers wg_turn + w: pending arrivals of the other warpgroup

    def load(kind, bufs, slot, tag, full):
        assert not readers.get((kind, slot)), f"{kind} slot {slot} overwritten while a GEMM reads it"
        full.arrive(1, 2)  # arrive.expect_tx, then the copy
        inflight.append((bufs, slot, tag, full, 2))

    def load_v(vc, pending):
        s = vc % S
        while not ve[s].done(((vc // S) & 1) ^ 1):
            yield
        ui, st, boxes = pending
        if boxes == 0:
            vf[s].arrive(1)
        else:
            load("v", vbuf, s, ("v", ui, st), vf[s])

    def producer():
        kc = vc = 0
        for ui, n in enumerate(units):
            slot = ui % QS
            while not qe[slot].done(((ui // QS) & 1) ^ 1):
                yield
            load("q", qbuf, slot, ("q", ui), qf[slot])
            pending = None
            for st in range(max(n, 1)):
                boxes = 0 if n == 0 else 2
                s = kc % S
                while not ke[s].done(((kc // S) & 1) ^ 1):
                    yield
                if boxes == 0:
                    kf[s].arrive(1)
                else:
                    load("k", kbuf, s, ("k", ui, st), kf[s])
                kc += 1
                if pending is not None:
                    yield from load_v(vc, pending)
                    vc += 1
                pending = (ui, st, boxes)
            yield from load_v(vc, pending)
            vc += 1

    def consumer(wg):
        stage, phase = 0, 0
        if wg == 1:
            turns[0] += 1  # warpgroup 0 takes the first turn

        def sync_mine():
            while turns[wg] == 0:
                yield
            turns[wg] -= 1

        def arrive_other():
            turns[1 - wg] += 1
            assert turns[1 - wg] <= 1

        def read(kind, slot):
            readers.setdefault((kind, slot), set()).add(wg)

        def done_reading(kind, slot, empty):
            readers[(kind, slot)].discard(wg)
            empty.arrive(4)  # one arrival per warp

        for ui, n in enumerate(units):
            qs = ui % QS
            while not qf[qs].done((ui // QS) & 1):
                yield
            assert qbuf[qs] == ("q", ui)
            while not kf[stage].done(phase):
                yield
            if n == 0:
                while not vf[stage].done(phase):
                    yield
                yield from sync_mine()
                arrive_other()
                ke[stage].arrive(4)
                ve[stage].arrive(4)
                qe[qs].arrive(4)
            else:
                yield from sync_mine()
                assert kbuf[stage] == ("k", ui, 0)
                read("k", stage)
                read("q", qs)
                arrive_other()
                yield
                done_reading("k", stage, ke[stage])
                if n == 1:
                    done_reading("q", qs, qe[qs])
                held, held_phase = stage, phase
            stage += 1
            if stage == S:
                stage, phase = 0, phase ^ 1
            if n == 0:
                continue
            for st in range(1, n):
                while not kf[stage].done(phase):
                    yield
                yield from sync_mine()
                assert kbuf[stage] == ("k", ui, st)
                read("k", stage)
                while not vf[held].done(held_phase):
                    yield
                assert vbuf[held] == ("v", ui, st - 1)
                read("v", held)
                arrive_other()
                yield
                done_reading("k", stage, ke[stage])
                if st == n - 1:
                    done_reading("q", qs, qe[qs])
                yield
                done_reading("v", held, ve[held])
                held, held_phase = stage, phase
                stage += 1
                if stage == S:
                    stage, phase = 0, phase ^ 1
            while not vf[held].done(held_phase):
                yield
            assert vbuf[held] == ("v", ui, n - 1)
            read("v", held)
            yield
            done_reading("v", held, ve[held])
            for _ in range(rnd.randint(0, 3)):  # the epilogue
                yield

    actors = [producer(), consumer(0), consumer(1)]
    alive = [True] * 3
    idle = 0
    while any(alive):
        choices = [i for i in range(3) if alive[i]] + (["tma"] if inflight else [])
        c = rnd.choice(choices)
        if c == "tma":
            bufs, slot, tag, bar, nbytes = inflight.pop(rnd.randrange(len(inflight)))
            bufs[slot] = tag
            bar.complete_tx(nbytes)
            idle = 0
            continue
        try:
            next(actors[c])
        except StopIteration:
            alive[c] = False
        idle += 1
        if idle > 10000:
            raise RuntimeError("deadlock")
    assert not inflight


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for seed in range(seeds):
        rnd = random.Random(seed)
        S, QS = rnd.choice([2, 3, 5]), rnd.choice([1, 2])
        units = [rnd.choice([0, 1, 1, 2, 3, 4, 7]) for _ in range(rnd.randint(1, 8))]
        try:
            run(units, S, QS, seed)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL seed {seed}: stages {S}, Q buffers {QS}, units {units}: {e!r}")
            return 1
    print(f"ok: {seeds} random interleavings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
