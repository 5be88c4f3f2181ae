"""The load generator: SLA-tagged streaming traffic against an OpenAI-compatible server.

- `config`: traffic classes (share, SLO, length distributions, optional own arrival) and LoadConfig;
- `arrivals`: registry of open-loop arrival strategies (poisson, gamma, constant, ramp, steps);
  `trace`: replay files; `plan`: the seeded schedule of a run (streams, sweeps, warm-up);
- `lengths`, `prompts`: request lengths and prompts of an exact token count;
- `client`: aiohttp streaming client, one `RequestRecord` (`records`) per request;
- `summary`: SLO verdicts, per (step, config, class) percentiles, attainment and goodput;
- `exporter`: the client-side /metrics endpoint; `progress`: the live terminal view;
- `sender`: sends a plan (open loop on schedule, closed-loop users), one record per request;
- `split`: the exact split of a plan over N workers; `worker`: a worker process (its events on a pipe),
  `ray_worker`: the same as a Ray actor; `fleet`: the parent that starts them, gives them one start
  time, merges their records and reports each;
- `runner.run_load`: the library entry point (kept out of this module so that importing
  `schema.traffic` stays light); `cli`: `parallax load` and `parallax summarize`.
"""
