"""One vLLM replica: continuous batching, chunked prefill, KV blocks and recompute preemption, event-driven.

The engine runs vLLM V1's scheduler (reference/vllm-replica-model.md §2.4, §2.5; vllm
``v1/core/sched/scheduler.py``) one engine step at a time, each step timed by the profile's step-time model
(§1.4, :meth:`ReplicaProfile.step_seconds`, whose context is the KV each scheduled sequence holds after the
step):

* every step first gives each decoding sequence one token, then fills the rest of ``max_num_batched_tokens``
  with prefill chunks: sequences already prefilling (oldest first), then requests from the FCFS waiting
  queue, at most ``max_num_seqs`` running;
* a sequence holding ``c`` tokens of KV uses ``ceil(c / block_size)`` blocks; the first token of a request
  comes with the step that computes the last of its prompt, so TTFT = queue wait + prefill;
* when a decode needs a new block and none is free, the NEWEST running request is preempted (recompute: its
  blocks freed, its computed tokens reset, put back at the front of the queue, ``preemptions`` counted), until
  the rest fit; a step that preempted admits nothing. A preempted request keeps the tokens it generated (vLLM
  keeps ``output_token_ids``) and re-prefills prompt + generated tokens, then goes on generating; its
  ``first_token_at`` stays the first one ever produced;
* a request whose prompt + output exceeds ``max_model_len`` is refused (vLLM answers 400): ``submit`` returns
  False and queues nothing.

Simplifications, each a choice of this model rather than vLLM's behaviour:

* admission allocates the blocks of the whole prompt (vLLM allocates chunk by chunk), so a prompt is admitted
  only when it fits entirely and a prefilling sequence never runs out mid-prompt;
* no prefix caching (vLLM V1 enables it): a re-prefill after preemption recomputes everything;
* no KV watermark, no speculative decoding, no async scheduling; the output length is known (the trace's), and
  a request produces at least one token;
* a request arriving during a step waits for the step's end (the scheduler runs between steps);
* ``prompt_tokens_total`` counts a prompt once, when its first token comes; ``generation_tokens_total`` counts
  each output token once (a re-prefill recomputes the generated tokens, it does not count them again).

Speed: the engine never walks the running sequences. Between two changes of the batch (a finish, a queued
request becoming admissible, KV running out) every step is a pure decode of the same D sequences, whose
context grows by D tokens a step, so step j takes ``a + b j`` seconds and n steps take
``n a + b n (n - 1) / 2``: the engine jumps over them in closed form. A global decode-step counter gives each
decoding sequence its finish step (a heap) and the steps at which it needs a new KV block (one of
``block_size`` phase buckets), so each event costs O(log n) and the KV in use after n steps is O(block_size).
Steps with a prefill chunk or a preemption run one at a time.

``next_change`` is the end of the next step or decode stretch the engine has planned: it is never later than
the next first token or finish, and can be a step boundary where only the batch changes (a prompt chunk longer
than the step's budget, a preemption); advancing to it emits nothing then, and costs one plan. When a request
arrives during a decode stretch, the engine runs at once the steps up to the next boundary (the last of them
in progress at the arrival, so fixed already, and producing nothing), so that ``next_change`` is the step that
serves the request: the counters and ``kv_usage`` can then be ahead of ``now`` by that one step.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from controller.sim.profiles import ReplicaProfile
from controller.sim.request import SimRequest

__all__ = ["ReplicaEngine"]

_IDLE, _DECODE, _MIXED = 0, 1, 2


class _Seq:
    """A request inside the engine."""

    __slots__ = ("blocks", "computed", "decode_base", "enqueued_at", "generated", "order", "output", "prompt",
                 "request", "target")

    def __init__(self, request: SimRequest, now: float) -> None:
        self.request = request
        self.prompt = max(1, request.prompt_tokens)
        self.output = max(1, request.output_tokens)
        self.generated = 0  # tokens produced before the current prefill (kept over a preemption)
        self.target = self.prompt  # tokens the current prefill computes: prompt + generated
        self.computed = 0  # of target, while prefilling
        self.blocks = 0  # KV blocks held while prefilling
        self.order = -1  # admission number: the running order, newest last
        self.decode_base = 0  # while decoding: generated = engine decode steps - decode_base
        self.enqueued_at = now


# A planned mixed step: (preempted, admitted, prefill tokens, context, decodes, chunks); see _schedule.
_MixedStep = tuple[list[_Seq], int, int, int, int, list[tuple[_Seq, int]]]
_NO_STEP: _MixedStep = ([], 0, 0, 0, 0, [])


class ReplicaEngine:
    """One vLLM replica. Time only moves forward: every call carries ``now``, never earlier than the last."""

    __slots__ = (
        "_blocks_total", "_buckets", "_ctok", "_decode_sum", "_decoding", "_finished", "_heap", "_kkv",
        "_max_batched", "_next_order", "_plan_a", "_plan_b", "_plan_end", "_plan_kind", "_plan_mixed_step",
        "_plan_n", "_plan_valid", "_prefilling", "_steps", "_t", "_tovh", "_tw", "_used_blocks", "_waiting",
        "block_size", "generation_tokens_total", "max_model_len", "max_num_seqs", "preemptions_total", "profile",
        "prompt_tokens_total", "requests_finished_total",
    )

    def __init__(self, profile: ReplicaProfile, *, max_num_seqs: int | None = None, max_model_len: int | None = None,
                 start: float = 0.0) -> None:
        self.profile = profile
        self.max_num_seqs = profile.max_num_seqs if max_num_seqs is None else max_num_seqs
        self.max_model_len = profile.max_model_len if max_model_len is None else max_model_len
        self.block_size = profile.block_size
        self._max_batched = profile.max_num_batched_tokens
        self._blocks_total = profile.kv_blocks
        if self._blocks_total <= 0:
            raise ValueError(f"{profile.name}: the model does not fit, no memory is left for the KV cache")
        if self.max_model_len > profile.kv_capacity_tokens:
            raise ValueError(f"{profile.name}: vLLM refuses to start, max_model_len {self.max_model_len} exceeds the "
                             f"KV cache's {profile.kv_capacity_tokens} tokens")
        if not 1 <= self.max_num_seqs <= self._max_batched:
            raise ValueError(f"max_num_seqs must be 1..max_num_batched_tokens ({self._max_batched}), "
                             f"not {self.max_num_seqs}")
        # Step-time coefficients in seconds (§1.4), so the hot path does no unit conversion.
        self._tw = profile.step_fixed_ms / 1000
        self._ctok = profile.per_token_ms / 1000
        self._kkv = profile.kv_read_ms_per_ktok / 1e6  # per token of context
        self._tovh = profile.overhead_ms / 1000
        self._t = start  # the engine's step boundary: the start of its next step
        self._steps = 0  # steps run: every decoding sequence gains one token a step
        self._decoding: dict[_Seq, None] = {}  # insertion order = admission order
        self._prefilling: deque[_Seq] = deque()  # admitted, prompt not yet computed; newer than every decoding one
        self._waiting: deque[_Seq] = deque()
        self._heap: list[tuple[int, int, _Seq]] = []  # (finish step, order, seq); stale entries skipped
        self._buckets = [0] * self.block_size  # decoding sequences needing a new block at steps = phase (mod bs)
        self._decode_sum = 0  # sum over decoding seqs of (prompt - decode_base - 1): their KV = this + D x steps
        self._used_blocks = 0
        self._finished: list[SimRequest] = []
        self._next_order = 0
        self._plan_valid = False
        self._plan_kind = _IDLE
        self._plan_end = math.inf
        self._plan_n = 0
        self._plan_a = 0.0
        self._plan_b = 0.0
        self._plan_mixed_step = _NO_STEP
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.preemptions_total = 0
        self.requests_finished_total = 0

    # ----------------------------------------------------------------------------------- the world's API

    def submit(self, request: SimRequest, now: float) -> bool:
        """Queue ``request`` at ``now``; False (nothing queued) when it exceeds ``max_model_len`` (vLLM's 400)."""
        self.advance(now)
        if max(1, request.prompt_tokens) + max(1, request.output_tokens) > self.max_model_len:
            return False
        self._waiting.append(_Seq(request, now))
        self._plan_valid = False
        return True

    def advance(self, now: float) -> None:
        """Run every step that ends by ``now``; the requests they finish wait in :meth:`pop_finished`."""
        while True:
            if not self._plan_valid:
                self._plan()
            if self._plan_end <= now:
                if self._plan_kind == _DECODE:
                    self._run_decode(self._plan_n, self._plan_end)
                    self._finish_due()
                else:
                    self._run_mixed()
                self._plan_valid = False
                continue
            if self._plan_kind == _DECODE:  # part of a decode stretch is done by now: run it, for the gauges
                done = self._steps_by(now)
                if done > 0:
                    b = self._plan_b
                    self._run_decode(done, self._stretch_end(done))
                    self._plan_n -= done  # the rest of the stretch: its steps are later in the same line
                    self._plan_a += b * done
            return

    def pop_finished(self) -> list[SimRequest]:
        finished, self._finished = self._finished, []
        return finished

    @property
    def next_change(self) -> float:
        if not self._plan_valid:
            self._plan()
        return self._plan_end

    def abort(self, now: float) -> list[SimRequest]:
        """Advance to ``now``, then drop and return every request in flight (running first, then waiting)."""
        self.advance(now)
        dropped = [seq.request for seq in self._decoding]
        dropped += [seq.request for seq in self._prefilling]
        dropped += [seq.request for seq in self._waiting]
        self._decoding.clear()
        self._prefilling.clear()
        self._waiting.clear()
        self._heap.clear()
        self._buckets = [0] * self.block_size
        self._decode_sum = 0
        self._used_blocks = 0
        self._t = max(self._t, now)
        self._plan_valid = False
        return dropped

    # ------------------------------------------------------------------------------------------- gauges

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._decoding) + len(self._prefilling)

    @property
    def outstanding(self) -> int:
        return len(self._waiting) + len(self._decoding) + len(self._prefilling)

    @property
    def kv_usage(self) -> float:
        return self._used_blocks / self._blocks_total

    # ----------------------------------------------------------------------------------------- planning

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _head_admissible(self, free_blocks: int) -> bool:
        """Whether the queue's head would be admitted at the next step, ignoring when it arrived."""
        head = self._waiting[0]
        return (len(self._decoding) + len(self._prefilling) < self.max_num_seqs
                and len(self._decoding) < self._max_batched
                and self._blocks_for(head.target) <= free_blocks)

    def _plan(self) -> None:
        """Decide what the engine does from its step boundary: idle, a decode stretch, or one mixed step."""
        self._plan_valid = True
        decoding = len(self._decoding)
        if not decoding and not self._prefilling:
            if not self._waiting:
                self._plan_kind, self._plan_end = _IDLE, math.inf
                return
            self._t = max(self._t, self._waiting[0].enqueued_at)  # idle until the first request arrives
            self._plan_mixed()
            return
        if self._prefilling:
            self._plan_mixed()
            return
        steps = self._steps
        bs = self.block_size
        buckets = self._buckets
        free = self._blocks_total - self._used_blocks
        need_now = buckets[steps % bs]
        if need_now > free:
            self._plan_mixed()  # this step preempts
            return
        head_cut = False
        if self._waiting and self._head_admissible(free - need_now):
            if self._waiting[0].enqueued_at <= self._t:
                self._plan_mixed()
                return
            head_cut = True
        heap = self._heap
        while True:  # drop stale heap entries (preempted sequences)
            finish_step, order, seq = heap[0]
            if seq.order == order and seq in self._decoding:
                break
            heapq.heappop(heap)
        n = finish_step - steps
        # KV: stop before the first step whose new blocks do not fit (a stretch of n steps needs at most
        # ceil(n / bs) blocks per sequence)
        if -(-n // bs) * decoding > free and self._blocks_needed(n) > free:
            cycles, spare = divmod(free, decoding)
            n_fit = cycles * bs
            acc = 0
            for j in range(bs):
                acc += buckets[(steps + j) % bs]
                if acc > spare:
                    n_fit += j
                    break
            n = min(n, n_fit)
        t0 = self._t
        a = (max(self._tw, self._ctok * decoding) + self._tovh
             + self._kkv * (self._decode_sum + decoding * (steps + 1)))
        b = self._kkv * decoding
        self._plan_a, self._plan_b, self._plan_n = a, b, n
        if head_cut:
            # A request queued during a step joins at the next boundary. The steps up to that boundary (the
            # last of them in progress when it arrived) are fixed, and produce nothing before the stretch's
            # end: run them now, so the next change is the step that serves the request.
            arrival = self._waiting[0].enqueued_at
            cut = self._steps_by(arrival)
            if t0 + cut * a + b * cut * (cut - 1) / 2 < arrival:
                cut += 1
            if cut < n:
                self._run_decode(cut, t0 + cut * a + b * cut * (cut - 1) / 2)
                self._plan()
                return
        self._plan_kind = _DECODE
        self._plan_end = t0 + n * a + b * n * (n - 1) / 2

    def _stretch_end(self, n: int) -> float:
        return self._t + n * self._plan_a + self._plan_b * n * (n - 1) / 2

    def _steps_by(self, when: float) -> int:
        """Steps of the planned decode stretch that end by ``when`` (at most the stretch's)."""
        a, b, elapsed = self._plan_a, self._plan_b, when - self._t
        if elapsed <= 0:
            return 0
        if b > 0:
            half = a - b / 2
            n = int((math.sqrt(half * half + 2 * b * elapsed) - half) / b)
        else:
            n = int(elapsed / a)
        n = min(n, self._plan_n)
        t0 = self._t
        while n > 0 and t0 + n * a + b * n * (n - 1) / 2 > when:
            n -= 1
        while n < self._plan_n and t0 + (n + 1) * a + b * (n + 1) * n / 2 <= when:
            n += 1
        return n

    def _blocks_needed(self, n: int) -> int:
        """New KV blocks the decoding sequences need over the next ``n`` steps."""
        bs = self.block_size
        cycles, rest = divmod(n, bs)
        total = cycles * len(self._decoding)
        if rest:
            buckets = self._buckets
            first = self._steps % bs
            last = first + rest
            total += sum(buckets[first:last]) if last <= bs else sum(buckets[first:]) + sum(buckets[:last - bs])
        return total

    def _plan_mixed(self) -> None:
        """One step with prefill chunks or a preemption, worked out now and applied when it runs."""
        self._plan_kind = _MIXED
        self._plan_mixed_step = self._schedule()
        _, _, tokens, context, decodes, _ = self._plan_mixed_step
        self._plan_end = self._t + max(self._tw, self._ctok * (decodes + tokens)) + self._kkv * context + self._tovh

    # ------------------------------------------------------------------------------------------ running

    def _run_decode(self, n: int, end: float) -> None:
        """Run ``n`` pure decode steps, ending at ``end`` (the finishes they bring are left to the caller)."""
        self._used_blocks += self._blocks_needed(n)
        self.generation_tokens_total += n * len(self._decoding)
        self._steps += n
        self._t = end

    def _finish_due(self) -> None:
        heap, steps, decoding = self._heap, self._steps, self._decoding
        while heap and heap[0][0] <= steps:
            _, order, seq = heapq.heappop(heap)
            if seq.order != order or seq not in decoding:
                continue
            self._leave_decoding(seq)
            self._used_blocks -= self._blocks_for(seq.prompt + seq.output - 1)
            self._finish(seq)

    def _finish(self, seq: _Seq) -> None:
        request = seq.request
        request.finished_at = self._t
        self.requests_finished_total += 1
        self._finished.append(request)

    def _leave_decoding(self, seq: _Seq) -> None:
        del self._decoding[seq]
        self._buckets[(seq.decode_base + 1 - seq.prompt) % self.block_size] -= 1
        self._decode_sum -= seq.prompt - seq.decode_base - 1

    def _schedule(self) -> _MixedStep:
        """vLLM's scheduling of one step from the current state, without changing it.

        Returns the sequences to preempt (newest first), how many queued requests to admit, the prefill tokens,
        the KV context the step reads, the decodes, and the prefill chunks (sequence, tokens), admissions last.
        """
        bs = self.block_size
        steps = self._steps
        phase_now = steps % bs
        decodes = len(self._decoding)
        decode_context = self._decode_sum + decodes * (steps + 1)  # KV of the decoding seqs after the step
        free = self._blocks_total - self._used_blocks
        need = self._buckets[phase_now]
        victims: list[_Seq] = []
        prefilling = self._prefilling
        kept_prefilling = len(prefilling)
        if need > free:
            decoding_newest = reversed(self._decoding)
            while need > free:
                if kept_prefilling:
                    kept_prefilling -= 1
                    victim = prefilling[kept_prefilling]
                    free += victim.blocks
                else:
                    victim = next(decoding_newest)
                    generated = steps - victim.decode_base
                    free += self._blocks_for(victim.prompt + generated - 1)
                    if (victim.decode_base + 1 - victim.prompt) % bs == phase_now:
                        need -= 1
                    decodes -= 1
                    decode_context -= victim.prompt + generated
                victims.append(victim)
        free -= need
        budget = self._max_batched - decodes
        tokens = 0
        context = decode_context
        chunks: list[tuple[_Seq, int]] = []
        for index in range(kept_prefilling):
            if budget <= 0:
                break
            seq = prefilling[index]
            chunk = min(seq.target - seq.computed, budget)
            budget -= chunk
            tokens += chunk
            context += seq.computed + chunk
            chunks.append((seq, chunk))
        admitted = 0
        if not victims:
            running = decodes + kept_prefilling
            start = self._t
            for seq in self._waiting:
                if budget <= 0 or running >= self.max_num_seqs or seq.enqueued_at > start:
                    break
                blocks = -(-seq.target // bs)
                if blocks > free:
                    break
                free -= blocks
                running += 1
                admitted += 1
                chunk = min(seq.target, budget)
                budget -= chunk
                tokens += chunk
                context += chunk
                chunks.append((seq, chunk))
        return victims, admitted, tokens, context, decodes, chunks

    def _preempt(self, victims: list[_Seq]) -> None:
        """Recompute preemption (§2.5): free the blocks, reset the progress, back to the queue's front."""
        steps = self._steps
        for victim in victims:  # newest first: each goes in front of the previous, so the oldest leads
            if self._prefilling and self._prefilling[-1] is victim:
                self._prefilling.pop()
                self._used_blocks -= victim.blocks
            else:
                generated = steps - victim.decode_base
                self._leave_decoding(victim)
                self._used_blocks -= self._blocks_for(victim.prompt + generated - 1)
                victim.generated = generated
            victim.target = victim.prompt + victim.generated
            victim.computed = 0
            victim.blocks = 0
            victim.order = -1
            victim.request.preemptions += 1
            self.preemptions_total += 1
            self._waiting.appendleft(victim)

    def _run_mixed(self) -> None:
        """Run the planned mixed step: preemptions, admissions, decodes and prefill chunks."""
        victims, admitted, _, _, decodes, chunks = self._plan_mixed_step
        self._plan_mixed_step = _NO_STEP
        if victims:
            self._preempt(victims)
        waiting = self._waiting
        for _ in range(admitted):
            seq = waiting.popleft()
            seq.order = self._next_order
            self._next_order += 1
            seq.blocks = -(-seq.target // self.block_size)
            self._used_blocks += seq.blocks
            self._prefilling.append(seq)
        if self._decoding:
            self._used_blocks += self._buckets[self._steps % self.block_size]
        self._t = self._plan_end
        self._steps += 1
        produced = decodes
        for seq, chunk in chunks:
            seq.computed += chunk
            if seq.computed == seq.target:
                produced += 1
                self._prefilled(seq)
        self.generation_tokens_total += produced
        self._finish_due()

    def _prefilled(self, seq: _Seq) -> None:
        """``seq``'s prompt (and generated tokens, after a preemption) is computed: it yields its next token."""
        popped = self._prefilling.popleft()
        assert popped is seq, "prefills complete in admission order"
        request = seq.request
        if request.first_token_at is None:
            request.first_token_at = self._t
            self.prompt_tokens_total += seq.prompt
        generated = seq.generated + 1
        if generated >= seq.output:
            self._used_blocks -= seq.blocks
            self._finish(seq)
            return
        # generated = steps - decode_base from now on; KV holds prompt + generated - 1 tokens (= target)
        seq.decode_base = self._steps - generated
        self._decoding[seq] = None
        self._buckets[(seq.decode_base + 1 - seq.prompt) % self.block_size] += 1
        self._decode_sum += seq.prompt - seq.decode_base - 1
        heapq.heappush(self._heap, (seq.decode_base + seq.output, seq.order, seq))
