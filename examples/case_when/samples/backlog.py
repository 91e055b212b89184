# TODO: item 0
# TODO: item 1
# TODO: item 2
# TODO: item 3
# TODO: item 4
# TODO: item 5
# TODO: item 6
# TODO: item 7
# TODO: item 8
# TODO: item 9
# TODO: item 10
# TODO: item 11
def fine():
    return 1
