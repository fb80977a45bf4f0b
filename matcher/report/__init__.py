"""Writing search results for people and scripts: table, JSON, CSV and the HTML report."""
