-- Hyperparameter sweeps: a grid over a base config becomes queued training runs.
CREATE TABLE sweeps (
    sweep_id    VARCHAR PRIMARY KEY,
    dataset_id  VARCHAR NOT NULL,
    split_id    VARCHAR NOT NULL,
    base_config VARCHAR NOT NULL,          -- JSON TrainConfig the grid varies
    grid        VARCHAR NOT NULL,          -- JSON {key: [values]}
    quick       BOOLEAN NOT NULL,          -- quick what-if: subsampled / shorter, say so
    estimate_s  DOUBLE,                    -- estimated total time at launch
    created_at  TIMESTAMP DEFAULT current_timestamp,
    cancelled   BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE sweep_runs (
    sweep_id  VARCHAR NOT NULL,
    run_id    VARCHAR NOT NULL,
    params    VARCHAR NOT NULL,            -- JSON of this run's grid values
    PRIMARY KEY (sweep_id, run_id)
);
