from graphrnn.cli import command

command()
