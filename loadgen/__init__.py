"""The load generator: SLA-tagged streaming traffic against an OpenAI-compatible server.

- `config`: traffic classes (share, SLO, length distributions, optional own arrival) and LoadConfig;
- `arrivals`: registry of open-loop arrival strategies (poisson, gamma, constant, ramp, steps);
  `trace`: replay files; `plan`: the seeded schedule of a run (streams, sweeps, warm-up);
- `lengths`, `prompts`: request lengths and prompts of an exact token count;
- `client`: aiohttp streaming client, one `RequestRecord` (`records`) per request;
- `summary`: SLO verdicts, per (step, config, class) percentiles, attainment and goodput;
- `exporter`: the client-side /metrics endpoint; `progress`: the live terminal view;
- `runner.run_load`: the library entry point (kept out of this module so that importing
  `loadgen.config` stays light); `cli`: `parallax load` and `parallax summarize`.
"""
