"""The run orchestrator: measure the reference server under Locust load, write a run folder.

``python -m bench run --scenario FILE [--codec json,protobuf] [--loads 100,200,400]
[--repeat N] [--processes N] [--duration-s S] [--warmup-s S] [--set KEY=VALUE …]
[--out results/<run-id>] [--keep-db]``

For each point — every (replication, offered load, codec), codecs interleaved so that
drift on a shared machine hits both alike — it:

1. starts ``python -m server --scenario <resolved scenario> --port 0 --db <fresh file>``
   (``CHATCAP_JWT_SECRET`` set), waits for its listening line and ``GET /readyz`` = 200;
   the line's scheme sets every client's: ``wss://`` → ``https://127.0.0.1:PORT`` for the
   scrapes and for Locust's ``--host`` (its users then open ``wss://``);
2. scrapes ``/metrics`` (*before*);
3. runs Locust headless in its own process (never gevent in this one)::

       python -m locust -f bench/locustfile.py --headless -u USERS -r SPAWN -t RUN
           --host http(s)://127.0.0.1:PORT --chat-codec CODEC --chat-scenario FILE
           --chat-send-rate RATE --chat-seed SEED --chat-out chat.json
           --csv locust --html locust.html --exit-code-on-error 0
           [--processes N --master-bind-host 127.0.0.1 --master-bind-port P --master-port P]

   with ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` set to the scenario's
   ``server.tls.ca_file`` when the server speaks TLS and one is named (the scrapes trust
   the same file; :mod:`bench._support.tls`);
   while it runs, every ``--sample-s`` (1 s) it scrapes ``/metrics`` and reads the CPU
   time of the Locust process and its ``--processes`` children from ``/proc/<pid>/stat``
   (by PID) and the machine's from ``/proc/stat``;
4. scrapes ``/metrics`` (*after*), sends SIGTERM to the server and expects exit status 0
   (graceful drain), then turns it all into one ``summary.csv`` row.

**Offered load → users.** An offered load ``L`` sends/s keeps the scenario's
``send_rate_per_user_per_s`` and sets ``users = round(L / rate)`` (at least 1); the
per-user rate is then ``L / users``, so the offered load is exactly ``L``. Above
``--max-users`` (default: the server's ``max_connections_per_ip``, at most 1000) the users
stay at the cap and the per-user rate rises instead (the row's note says so). Users spawn
at ``min(users, server.handshake_rate_per_s)`` per second and Locust runs
``duration + spawn time`` seconds. Rooms fill to the scenario's room size.

**The measured window.** Server-side figures come from the differences of two in-run
scrapes: from ``warm-up`` seconds after the first scrape that saw 95 % of the users
connected, to the last scrape that still did (Locust stops its users at the end, so the
window never holds the ramp or the stop). ``acked_per_s``, ``sent_total``
(frames received), ``acked_total``, ``duration_s``, ``server_cpu_us_per_msg`` (Δ
``chatcap_process_cpu_seconds_total`` ÷ Δ acks) and ``server_ack_p50_ms`` /
``server_ack_p99_ms`` (Δ ``chatcap_ack_latency_seconds`` buckets, interpolated) cover
that window. The client's figures — ack and delivery latency percentiles from the merged
µs HdrHistograms, ``error_rate`` — cover the whole Locust run: the load generator does
not cut a warm-up. ``delivered_per_s`` is the window's goodput times the deliveries per
ack the generator counted (the server does not count fan-out frames). A run too short for
a warm-up cut uses the whole loaded interval, and a run without such scrapes
before → after; the note says which.

**Generator-bound rows.** A row is marked ``generator_bound = true`` (with the reasons in
its note), not reported as server capacity, when the load generator may have set the
pace: a Locust process used ≥ 90 % of a core in the window (``/proc``), or the
``--chat-out`` document says so (:func:`bench.load.report.generator_bound`: a process
over 90 % CPU, or scheduled sends never sent), or the send schedule lagged (schedule lag
p99 over :data:`LAG_P99_MAX_MS`). A smaller lag that is still over half the ack p99
earns a caution note instead (the load went out, but the tail is partly the
generator's; ``ack_from_send`` in ``chat.json`` is the latency without it). On this
2-core machine the server competes with the generator: the note also says when the
whole machine was ≥ 95 % busy.

**Capacity by search** (``--find-capacity``): instead of fixed loads, per codec
:func:`bench.run.search.find_capacity` chooses each point's offered load — the
``--loads`` ladder, then doubling, then bisection near the knee, then repeats of the
capacity step and the knee (``--repeat``, 3) — until the SLO (``--slo-p99-ms`` on ack and
delivery p99, ``--slo-error-rate``) breaks or acked ÷ offered falls below
``--follow-min``; a generator-bound point never counts as server capacity. One more
file, ``capacity.csv`` (one row per codec), and the manifest's ``search``; see
:mod:`bench.run.search` and ``results/README.md``.

**Files** (``results/<run-id>/``): ``manifest.json``, ``summary.csv`` (rewritten after
each point, so an interrupted run leaves a valid folder), ``scenario.toml`` (what the
server and Locust read) and ``points/<codec>-<load>-r<replication>/`` with
``chat.json`` (the ``--chat-out`` document: histograms, loss, errors, generator),
``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
``locust_exceptions.csv``, ``locust.html``, ``locust.log``, ``server.stdout``,
``server.stderr`` (the server's log), ``metrics-before.txt``, ``metrics-after.txt``,
``samples.csv`` (the in-run scrapes) and ``point.json`` (everything computed, with the
commands, exit codes, window and generator CPU). The store is deleted unless
``--keep-db``.

Exit status: 0; 1 when a point failed (its row carries NaNs and the reason); 2 for bad
input (one line).

Modules: :mod:`~bench.run.points` (points and load shapes), :mod:`~bench.run.window`
(samples and the measured window), :mod:`~bench.run.figures` (the row, generator bound),
:mod:`~bench.run.processes` (server and Locust subprocesses), :mod:`~bench.run.measure`
(one point), :mod:`~bench.run.search` (the capacity search, pure), :mod:`~bench.run.cli`
(the command). This ``__init__`` imports none of them.
"""
