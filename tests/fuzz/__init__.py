"""A fuzz test at the HTTP boundary (issue 18): valid vendor bodies, one hostile value each, the real tap.

- `rawjson`: JSON with raw fragments (1e400, invalid UTF-8, nesting past any decoder's limit), which no
  JSON library will write on purpose.
- `server`: a purpose-made loopback server that serves a fixed path -> bytes map (bounded in time and
  in requests), with an OAuth token endpoint for CDF.
- `world`: valid listing and result bodies for each vendor (built with the fakes' own payload builders in
  tests/fakeapi, tidy and realistic), the corruption of one value at one JSON path of one job's body,
  and what each job should produce.
- `hostile`: hypothesis strategies for the hostile values and where to put them.
- `check`: runs the tap binary three times (corrupted server, repaired server, again) and returns every
  broken invariant, attributed to the job (and corruption) it concerns.
- `corpus/`: minimal reproductions found so far, replayed on every run; `db/`: hypothesis' failure database.
"""
