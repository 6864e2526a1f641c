from resadapt_eval.cli import main

main()
