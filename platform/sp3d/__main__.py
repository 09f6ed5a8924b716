from sp3d.cli import main

main()
