-- The bar to beat: BM25 and the zero-shot bi-encoder on each run's own validation pairs,
-- measured by the worker (runs/<id>/baselines.json, status.json "baselines") and ingested here.
ALTER TABLE runs ADD COLUMN bm25_ndcg10 DOUBLE;
ALTER TABLE runs ADD COLUMN bm25_mrr10 DOUBLE;
ALTER TABLE runs ADD COLUMN biencoder_ndcg10 DOUBLE;
ALTER TABLE runs ADD COLUMN biencoder_mrr10 DOUBLE;
