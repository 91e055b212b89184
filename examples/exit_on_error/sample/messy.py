def area(width, height):   
    """Area of a rectangle."""
    return width * height


def describe(width, height):
    return "a rectangle of width " + str(width) + " and height " + str(height) + " units"
