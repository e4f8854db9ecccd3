.PHONY: test quick lint format docs bench synthetic

test:
	pytest

quick:
	pytest -m "not slow" -n 2 --dist loadfile

lint:
	ruff check src tests bench scripts examples
	ruff format --check src tests bench scripts examples
	mypy

format:
	ruff format src tests bench scripts examples
	ruff check --fix src tests bench scripts examples

docs:
	python scripts/cli_docs.py

bench:
	python bench/tag_throughput.py
	python bench/parallel_pairs.py
	python bench/text_speed.py
	python bench/retag_speed.py
	python bench/train_throughput.py
	python bench/metrics_speed.py

synthetic:
	python bench/synthetic/experiment.py
