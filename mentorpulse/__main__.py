from mentorpulse.cli import main

main()
