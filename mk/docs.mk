# The README's pictures of a real run: the demo recipe's loss curve, its document lengths and its samples.
#
#   make docs              the demo chain first (each stage is skipped when up to date), then, from its artifacts:
#                          docs/img/demo_loss.png, docs/img/demo_doc_lengths.png, docs/img/demo.json (the numbers
#                          the README quotes) and docs/demo_samples.md (samples at step 0 and at the last step)
#   make docs FORCE=1      retrain the demo model first (RESUME=1 records a run that reached its last step)
#
# Always the demo recipe, whatever CONFIG says: these are the figures the README shows. tests/test_demo_figures.py
# checks that the README quotes docs/img/demo.json and that today's code still reproduces its numbers.
DOCS_CONFIG := configs/demo.toml

.PHONY: docs
docs: $(STAMP)
	$(MAKE) --no-print-directory pretrain CONFIG=$(DOCS_CONFIG)
	$(PY) scripts/demo_figures.py --artifacts artifacts/demo --out docs
