-- Corpora (document collections for first-stage retrieval), mined dataset versions and their
-- provenance, and the review decisions made on them.
CREATE TABLE corpora (
    corpus_id     VARCHAR PRIMARY KEY,       -- content-addressed: 'co-' + hash
    name          VARCHAR NOT NULL UNIQUE,
    source        VARCHAR,                   -- file path, or 'dataset:<dataset_id>'
    content_hash  VARCHAR NOT NULL,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    lines_read    BIGINT NOT NULL,
    accepted      BIGINT NOT NULL,
    rejected      BIGINT NOT NULL,           -- invalid lines and repeated doc ids
    blank         BIGINT NOT NULL,
    n_docs        BIGINT NOT NULL
);

CREATE TABLE corpus_docs (
    corpus_id  VARCHAR NOT NULL,
    pos        BIGINT NOT NULL,              -- 0-based row in the first-stage indexes
    doc_id     VARCHAR NOT NULL,
    title      VARCHAR,
    text       VARCHAR NOT NULL,             -- what is indexed and reranked: title + text
    line       BIGINT NOT NULL
);

CREATE TABLE corpus_errors (
    corpus_id  VARCHAR NOT NULL,
    line       BIGINT NOT NULL,
    field      VARCHAR NOT NULL,
    message    VARCHAR NOT NULL,
    raw        VARCHAR
);

-- A dataset made from another one (e.g. by mining): the parent is never changed.
CREATE TABLE dataset_versions (
    dataset_id  VARCHAR PRIMARY KEY,
    parent_id   VARCHAR NOT NULL,
    corpus_id   VARCHAR,
    kind        VARCHAR NOT NULL,            -- 'mined'
    params      VARCHAR NOT NULL,            -- JSON
    stats       VARCHAR NOT NULL,            -- JSON
    created_at  TIMESTAMP DEFAULT current_timestamp
);

-- Where every mined negative came from, and what the reviewer decided.
CREATE TABLE mined_pairs (
    dataset_id      VARCHAR NOT NULL,
    query_id        VARCHAR NOT NULL,
    doc_id          VARCHAR NOT NULL,
    line            BIGINT NOT NULL,         -- the pair's line in the new version
    retriever       VARCHAR NOT NULL,        -- 'bm25' | 'biencoder:<model>' | 'random'
    rank            INTEGER,                 -- 1-based retriever rank (NULL for random)
    score           DOUBLE,                  -- retriever score
    positive_score  DOUBLE,                  -- retriever score of the query's best positive
    guard_score     DOUBLE,                  -- false-negative guard score (NULL without guard)
    sampled         VARCHAR NOT NULL,        -- 'top' | 'random' | 'random-corpus'
    decision        VARCHAR NOT NULL DEFAULT 'pending',  -- pending|accepted|dropped|relevant
    decided_at      TIMESTAMP,
    PRIMARY KEY (dataset_id, query_id, doc_id)
);
