"""botopt's command-line interface: a thin typer + rich shell over ``botopt.core``."""
