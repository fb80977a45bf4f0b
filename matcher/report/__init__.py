"""Writing search results for people and scripts: JSON Lines, CSV, the terminal's records and the HTML report.

Every one of them says each match's evidence in the same words (:mod:`matcher.evidence`)."""

from matcher.report.formats import (CSV_COLUMNS, IDENTITY_QUERY, JSONL_FIELDS, JSONL_MATCH_FIELDS, by_dataset, csv_row,
                                    dataset_counts, plural, summarise, visible, write_csv, write_jsonl)
from matcher.report.html import write_html
from matcher.report.table import SURE_SHORT, print_identity, print_items, print_table

__all__ = ["CSV_COLUMNS", "IDENTITY_QUERY", "JSONL_FIELDS", "JSONL_MATCH_FIELDS", "by_dataset", "csv_row",
           "dataset_counts", "plural", "summarise", "visible", "write_csv", "write_jsonl", "write_html", "SURE_SHORT",
           "print_identity", "print_items", "print_table"]
