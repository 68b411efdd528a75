-- Data checks: results cached per (dataset, split, section, parameters), and each run's settings
-- so the Checks page can show the last results on load without recomputing.
CREATE TABLE check_cache (
    dataset_id   VARCHAR NOT NULL,
    split_id     VARCHAR NOT NULL,
    section      VARCHAR NOT NULL,      -- 'leakage' | 'labels' | 'truncation'
    params_key   VARCHAR NOT NULL,      -- e.g. model fingerprint + max length, or threshold
    result       VARCHAR NOT NULL,      -- JSON
    seconds      DOUBLE,
    created_at   TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dataset_id, split_id, section, params_key)
);

CREATE TABLE check_runs (
    run_id           VARCHAR PRIMARY KEY,
    dataset_id       VARCHAR NOT NULL,
    split_id         VARCHAR NOT NULL,
    eval_dataset_id  VARCHAR,
    model_spec       VARCHAR,
    model_fp         VARCHAR,
    max_length       INTEGER,
    threshold        DOUBLE NOT NULL,
    batch_size       INTEGER,
    precision        VARCHAR,
    leak_findings    INTEGER NOT NULL,
    created_at       TIMESTAMP DEFAULT current_timestamp
);
