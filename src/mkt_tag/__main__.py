from mkt_tag.cli import main

main()
