-- Evaluation: a score cache shared by every evaluation and the playground, the evaluations run,
-- and their per-query metric values.

-- One score per (model weights, max length, window setting, exact query+document text).
-- A rerun, or an evaluation that adds a model or queries, scores only what is missing here.
CREATE TABLE score_cache (
    model_fp    VARCHAR NOT NULL,       -- lib.models.model_fingerprint (+ ranker kind prefix)
    max_length  INTEGER NOT NULL,
    windowing   VARCHAR NOT NULL,       -- 'none' or 'maxp:<stride>'
    pair_hash   VARCHAR NOT NULL,       -- sha1 of query + U+001F + document
    score       DOUBLE NOT NULL,
    created_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model_fp, max_length, windowing, pair_hash)
);

CREATE TABLE evaluations (
    eval_id         VARCHAR PRIMARY KEY,
    created_at      TIMESTAMP DEFAULT current_timestamp,
    dataset_id      VARCHAR NOT NULL,
    dataset_name    VARCHAR NOT NULL,
    split_id        VARCHAR,            -- NULL when the whole dataset was evaluated
    split           VARCHAR NOT NULL,   -- 'validation' | 'test' | 'train' | 'all'
    n_queries       BIGINT NOT NULL,    -- queries with at least one relevant candidate
    n_excluded      BIGINT NOT NULL,    -- queries without one (not averaged in)
    n_pairs         BIGINT NOT NULL,
    model           VARCHAR NOT NULL,   -- the ranker under test
    baselines       VARCHAR NOT NULL,   -- JSON list of ranker names
    primary_metric  VARCHAR NOT NULL,
    verdict         VARCHAR NOT NULL,
    report_dir      VARCHAR NOT NULL,   -- relative to the workspace root
    summary         VARCHAR NOT NULL    -- JSON: the CLI's --json object
);

CREATE TABLE evaluation_queries (
    eval_id   VARCHAR NOT NULL,
    ranker    VARCHAR NOT NULL,
    query_id  VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,
    value     DOUBLE NOT NULL,
    PRIMARY KEY (eval_id, ranker, query_id, metric)
);
