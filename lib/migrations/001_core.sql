-- Datasets, their pairs, ingest errors, splits. Later features add their own numbered files.
CREATE TABLE datasets (
    dataset_id    VARCHAR PRIMARY KEY,
    name          VARCHAR NOT NULL UNIQUE,
    source        VARCHAR,
    content_hash  VARCHAR NOT NULL,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    lines_read    BIGINT NOT NULL,
    accepted      BIGINT NOT NULL,
    rejected      BIGINT NOT NULL,
    duplicates    BIGINT NOT NULL,
    blank         BIGINT NOT NULL,
    label_scale   VARCHAR NOT NULL,      -- 'binary' or 'graded'
    max_label     INTEGER NOT NULL,
    n_queries     BIGINT NOT NULL,
    n_docs        BIGINT NOT NULL,
    field_map     VARCHAR                -- JSON: which input field fed each column
);

CREATE TABLE pairs (
    dataset_id  VARCHAR NOT NULL,
    line        BIGINT NOT NULL,        -- 1-based physical line in the source file
    query_id    VARCHAR NOT NULL,
    doc_id      VARCHAR NOT NULL,
    query       VARCHAR NOT NULL,
    document    VARCHAR NOT NULL,
    label       INTEGER NOT NULL,
    split_hint  VARCHAR                 -- the row's own 'split' field, when given
);

CREATE TABLE ingest_errors (
    dataset_id  VARCHAR NOT NULL,
    line        BIGINT NOT NULL,
    field       VARCHAR NOT NULL,
    message     VARCHAR NOT NULL,
    raw         VARCHAR                 -- the rejected line (cut at 10 kB), for download
);

CREATE TABLE splits (
    split_id      VARCHAR PRIMARY KEY,
    dataset_id    VARCHAR NOT NULL,
    seed          INTEGER NOT NULL,
    train_frac    DOUBLE NOT NULL,
    val_frac      DOUBLE NOT NULL,
    test_frac     DOUBLE NOT NULL,
    method        VARCHAR NOT NULL,     -- 'random', or e.g. 'grouped' from the leakage fix
    note          VARCHAR,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    is_active     BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE split_assignments (
    split_id  VARCHAR NOT NULL,
    query_id  VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,         -- 'train' | 'validation' | 'test'
    PRIMARY KEY (split_id, query_id)
);

CREATE TABLE settings (
    key    VARCHAR PRIMARY KEY,
    value  VARCHAR
);
