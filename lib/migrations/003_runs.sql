-- Training runs and their progress. The worker writes files in runs/<run_id>/ only; the app
-- ingests status.json and progress.jsonl into these tables (lib/training/ingest.py).
CREATE TABLE runs (
    run_id                    VARCHAR PRIMARY KEY,
    dataset_id                VARCHAR NOT NULL,
    split_id                  VARCHAR NOT NULL,
    config                    VARCHAR NOT NULL,     -- JSON TrainConfig, as in runs/<id>/config.json
    status                    VARCHAR NOT NULL,     -- queued|starting|running|finished|stopped|failed|cancelled
    created_at                TIMESTAMP DEFAULT current_timestamp,
    started_at                TIMESTAMP,
    finished_at               TIMESTAMP,
    queue_position            BIGINT,               -- set while queued; lower starts first
    train_pairs               BIGINT,
    validation_queries        INTEGER,
    device                    VARCHAR,
    precision                 VARCHAR,
    global_step               BIGINT,
    max_steps                 BIGINT,
    start_ndcg10              DOUBLE,               -- validation, untrained start (step 0)
    start_mrr10               DOUBLE,
    best_step                 BIGINT,
    best_ndcg10               DOUBLE,               -- validation, best checkpoint
    best_mrr10                DOUBLE,
    train_samples_per_second  DOUBLE,               -- training only, validation time excluded
    model_path                VARCHAR,
    error                     VARCHAR,
    metrics_lines             BIGINT NOT NULL DEFAULT 0   -- progress.jsonl lines ingested
);

CREATE TABLE run_metrics (
    run_id         VARCHAR NOT NULL,
    seq            BIGINT NOT NULL,                 -- 0-based line in progress.jsonl
    ts             DOUBLE,                          -- unix time
    kind           VARCHAR NOT NULL,                -- start|train|eval|end
    step           BIGINT,
    epoch          DOUBLE,
    loss           DOUBLE,
    lr             DOUBLE,
    samples_per_s  DOUBLE,
    ndcg10         DOUBLE,                          -- validation NDCG@10 (eval records)
    mrr10          DOUBLE,
    gpu_mem_mb     DOUBLE,
    extra          VARCHAR,                         -- the whole record as JSON
    PRIMARY KEY (run_id, seq)
);
